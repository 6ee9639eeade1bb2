"""Cull service: stops idle servers and, if asked, removes idle users."""
