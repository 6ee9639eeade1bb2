"""Formgrader service: nbgrader's grading UI for every course, for its graders."""
