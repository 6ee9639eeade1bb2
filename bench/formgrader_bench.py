"""Our formgrader against nbgrader's own formgrader, on one hub, on one course.

One JupyterHub (``tests.harness.hub.Hub``) runs both, behind the same configurable-http-proxy,
on the same course directory and gradebook, once per database of ``--db`` (SQLite, nbgrader's
default; a PostgreSQL the benchmark starts; or both, the default, each run on a hub and a course
of its own, the figures one after the other):

- ours: the ``formgrader`` service, at ``/services/formgrader/<course>/``;
- nbgrader's: a managed hub service named after the course running ``jupyterhub-singleuser``
  with nbgrader's formgrader server extension, as nbgrader's "Using nbgrader with JupyterHub"
  (one class, multiple graders) documents it, at ``/services/<course>/formgrader/``.

The script makes the course (an assignment generated with ``nbgrader generate_assignment``,
``--submissions`` students' notebooks written into ``submitted/``), then measures, one side after
the other: an autograde of every submission while a grader times an unrelated API call on the
same service; ``nbgrader autograde`` on an identical copy of the course; and ``--graders``
graders doing the grading page's API calls at once, with every write read back afterwards.

Run from the project root:
``.venv/bin/python -m bench.formgrader_bench [--db sqlite|postgresql|both] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jupyterhub
import nbformat
import nbgrader
import psutil
from nbgrader.api import Gradebook

from bench.common import (
    DATABASES,
    Databases,
    add_db_option,
    add_output_options,
    chosen_databases,
    docs_section,
    machine_busy,
    percentile,
    publish,
    run_on_hub,
)
from tests.harness import free_port
from tests.harness.hub import Hub
from tests.harness.nbgrader_reference import reference_hub_config, write_reference_config

COURSE = "course101"
ASSIGNMENT = "ps1"
NOTEBOOK = "words"
NBGRADER = str(Path(sys.executable).parent / "nbgrader")

#: The student's answer cell: count words, as a first-year exercise would ask.
SOLUTION = '''\
import re


def word_counts(text):
    """How often each word occurs in ``text``, ignoring case and punctuation."""
    ### BEGIN SOLUTION
    counts = {}
    for word in re.findall(r"[a-z']+", text.lower()):
        counts[word] = counts.get(word, 0) + 1
    return counts
    ### END SOLUTION'''

#: The hidden-answer test: small cases, then 100,000 words checked against collections.Counter.
TEST = '''\
"""word_counts is right on small cases and on a 100,000-word text (3 points)"""
import collections
import random
import re

assert word_counts("") == {}
assert word_counts("A cat, a hat.") == {"a": 2, "cat": 1, "hat": 1}
rng = random.Random(7)
vocabulary = ["the", "grader", "kernel", "notebook", "it's", "cell", "test", "score"]
text = " ".join(rng.choice(vocabulary).title() + rng.choice(["", ",", "."]) for _ in range(100_000))
assert word_counts(text) == collections.Counter(re.findall(r"[a-z']+", text.lower()))'''

#: Answers the students submit: most right, some wrong in a way the test catches.
RIGHT_ANSWER = SOLUTION.replace("    ### BEGIN SOLUTION\n", "").replace(
    "\n    ### END SOLUTION", ""
)
WRONG_ANSWER = RIGHT_ANSWER.replace("text.lower()", "text")  # forgets case


def nbgrader_cell(cell: nbformat.NotebookNode, grade_id: str, **flags: object) -> None:
    """Mark ``cell`` as nbgrader's "create assignment" toolbar would."""
    cell.metadata["nbgrader"] = {
        "grade_id": grade_id,
        "schema_version": 3,
        "locked": False,
        "solution": False,
        "grade": False,
        "task": False,
        **flags,
    }


def assignment_notebook() -> nbformat.NotebookNode:
    """The source notebook: an autograded answer with its test, and a written answer."""
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("# Problem set 1: words\n\nWrite `word_counts(text)`."),
        v4.new_code_cell(SOLUTION),
        v4.new_code_cell(TEST),
        v4.new_markdown_cell("Why does `word_counts` lower-case the text? One sentence."),
        v4.new_markdown_cell("So that 'The' and 'the' count as one word."),
    ]
    nbgrader_cell(cells[1], "word_counts", solution=True)
    nbgrader_cell(cells[2], "test_word_counts", grade=True, locked=True, points=3)
    nbgrader_cell(cells[4], "explain", grade=True, solution=True, points=2)
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def default_gradebook(root: Path) -> str:
    """nbgrader's own gradebook of a course: SQLite in its root."""
    return f"sqlite:///{root / 'gradebook.db'}"


def nbgrader_args(root: Path, db_url: str) -> list[str]:
    """Command-line config of the course for the nbgrader CLI (no config file is read)."""
    return [
        f"--CourseDirectory.root={root}",
        f"--CourseDirectory.course_id={COURSE}",
        f"--CourseDirectory.db_url={db_url}",
    ]


def make_course(root: Path, students: list[str], db_url: str | None = None) -> None:
    """Generate the assignment (its gradebook at ``db_url``, default nbgrader's: SQLite in
    ``root``) and write every student's submission into ``submitted/``."""
    db_url = db_url or default_gradebook(root)
    source = root / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    nbformat.write(assignment_notebook(), source / f"{NOTEBOOK}.ipynb")
    subprocess.run(
        [NBGRADER, "generate_assignment", ASSIGNMENT, *nbgrader_args(root, db_url)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    released = nbformat.read(root / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    rng = random.Random(0)
    with Gradebook(db_url, COURSE) as gb:
        for i, student in enumerate(students):
            gb.update_or_create_student(student, first_name="Student", last_name=str(i))
            nb = nbformat.from_dict(json.loads(json.dumps(released)))
            for cell in nb.cells:
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
                if grade_id == "word_counts":
                    cell.source = WRONG_ANSWER if i % 5 == 4 else RIGHT_ANSWER
                elif grade_id == "explain":
                    cell.source = rng.choice(["Case.", "So that The and the are one word."])
            folder = root / "submitted" / student / ASSIGNMENT
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")
            (folder / "timestamp.txt").write_text("2026-11-20 12:00:00.000000 UTC")


# -- the hub: our service and nbgrader's, on the same course -----------------------------------


@dataclass(frozen=True)
class Side:
    """One formgrader as a grader's browser reaches it through the proxy."""

    #: The prefix under which nbgrader's own routes (``formgrader/api/...``) are.
    base: str
    #: The service's process (the hub started it), for its CPU time.
    process: psutil.Process

    def url(self, path: str) -> str:
        return self.base + path

    def cpu(self) -> float:
        """CPU seconds the service's process (all its threads) has used so far."""
        times = self.process.cpu_times()
        return times.user + times.system


def service_process(hub: Hub, command_part: Callable[[str], bool]) -> psutil.Process:
    """The hub's child whose command line has a part for which ``command_part`` is true."""
    assert hub.proc is not None
    children = psutil.Process(hub.proc.pid).children()
    return next(p for p in children if any(command_part(part) for part in p.cmdline()))


def grader_names(count: int) -> list[str]:
    return [f"grader{i}" for i in range(count)]


def write_configs(work: Path, course_root: Path, db_url: str) -> Path:
    """nbgrader's config for the grader account, and ours, on the gradebook at ``db_url``;
    returns our config file."""
    exchange = work / "exchange"
    exchange.mkdir()
    write_reference_config(course_root.parent, COURSE, course_root, exchange, db_url)
    courses = {COURSE: {"root": str(course_root), "exchange": str(exchange), "db_url": db_url}}
    ours = work / "formgrader_config.py"
    ours.write_text(f"c.FormGrader.courses = {json.dumps(courses)}\n")
    return ours


def new_token(hub: Hub, user: str) -> str:
    """A hub API token of ``user`` that may use both formgraders, made with the admin token."""
    scopes = ["access:services!service=formgrader", f"access:services!service={COURSE}"]
    r = httpx.post(
        f"{hub.api_url}/users/{user}/tokens",
        headers={"Authorization": f"token {hub.admin_token}"},
        json={"scopes": scopes, "note": "formgrader benchmark"},
    )
    r.raise_for_status()
    return r.json()["token"]


def wait_for(url: str, token: str, hub: Hub, timeout: float = 90) -> None:
    """Wait until nbgrader's formgrader answers (the hub only waits for our services)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, headers={"Authorization": f"token {token}"}).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not up after {timeout}s:\n{hub.log_tail(30)}")
        time.sleep(0.5)


# -- autograde ---------------------------------------------------------------------------------


@dataclass
class Autograde:
    """One autograde of every submission."""

    wall: float
    graded: int
    #: Whole-machine busy CPU seconds per second of wall time while it ran.
    busy_cores: float
    #: Seconds of each unrelated API call made on the same service meanwhile.
    unrelated: list[float] = field(default_factory=list)


async def poll(
    client: httpx.AsyncClient, url: str, done: asyncio.Event, pause: float
) -> list[float]:
    """Time ``GET url`` again and again (``pause`` s apart) until ``done`` is set."""
    samples = []
    while not done.is_set():
        tic = time.perf_counter()
        r = await client.get(url)
        samples.append(time.perf_counter() - tic)
        r.raise_for_status()
        await asyncio.sleep(pause)
    return samples


async def autograde_ours(client: httpx.AsyncClient, side: Side, students: list[str]) -> int:
    """Our autograde-all: one request queues a batch that the service runs in parallel
    workers; its progress is polled until every job has finished."""
    r = await client.post(side.url(f"api/assignment/{ASSIGNMENT}/autograde"))
    r.raise_for_status()
    queued = r.json()
    assert set(queued["students"]) == set(students), queued
    while True:
        r = await client.get(side.url(f"api/batches/{queued['batch']}"))
        r.raise_for_status()
        batch = r.json()
        if batch["finished"]:
            return batch["done"]
        await asyncio.sleep(0.2)


async def autograde_theirs(client: httpx.AsyncClient, side: Side, students: list[str]) -> int:
    """nbgrader's formgrader has no autograde-all: one request per submission, as its page."""
    graded = 0
    for student in students:
        r = await client.post(
            side.url(f"formgrader/api/submission/{ASSIGNMENT}/{student}/autograde")
        )
        r.raise_for_status()
        graded += bool(r.json()["success"])
    return graded


async def timed_autograde(
    run: Callable[[], Awaitable[int]],
    during: Callable[[asyncio.Event], Coroutine[Any, Any, list[float]]],
) -> Autograde:
    """Run an autograde while ``during`` times unrelated calls; wall time and machine load."""
    done = asyncio.Event()
    busy, tic = machine_busy(), time.perf_counter()
    polling = asyncio.create_task(during(done))
    try:
        graded = await run()
    finally:
        done.set()
    wall = time.perf_counter() - tic
    return Autograde(wall, graded, (machine_busy() - busy) / wall, await polling)


async def autograde_cli(root: Path, db_url: str, students: list[str]) -> Autograde:
    """``nbgrader autograde <assignment>`` on a copy of the course: one process, in turn."""
    busy, tic = machine_busy(), time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        NBGRADER, "autograde", ASSIGNMENT, *nbgrader_args(root, db_url),
        cwd=root,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # so that an interrupted run takes its kernel with it
    )  # fmt: skip
    try:
        _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader autograde exited {proc.returncode}:\n{err.decode()[-3000:]}")
    wall = time.perf_counter() - tic
    graded = sum(
        (root / "autograded" / s / ASSIGNMENT / f"{NOTEBOOK}.ipynb").exists() for s in students
    )
    return Autograde(wall, graded, (machine_busy() - busy) / wall)


# -- grading -----------------------------------------------------------------------------------

#: The grading page's calls, in the order a grader makes them for one submission.
CALLS = ["GET grades", "GET comments", "PUT grade", "PUT comment", "POST flag"]


@dataclass(frozen=True)
class Target:
    """One submitted notebook a grader grades: its written answer's grade and comment."""

    notebook_id: str
    grade_id: str
    comment_id: str


@dataclass
class Grading:
    """One side's grading load: latencies, failures, and what the gradebook kept."""

    wall: float = 0.0
    #: CPU seconds the service's process used meanwhile.
    service_cpu: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: Counter[str] = field(default_factory=Counter)
    #: The last value each grader saw acknowledged, by grade / comment id; flags toggled.
    scores: dict[str, float] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    toggles: Counter[str] = field(default_factory=Counter)
    checked: int = 0
    lost: int = 0

    @property
    def all_latencies(self) -> list[float]:
        return [s for samples in self.latencies.values() for s in samples]

    @property
    def requests(self) -> int:
        return len(self.all_latencies) + sum(self.failures.values())


def targets(db_url: str, students: list[str]) -> list[Target]:
    """Every submission's written-answer grade and comment, from the gradebook."""
    found = []
    with Gradebook(db_url, COURSE) as gb:
        for student in students:
            nb = gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
            grade = next(g for g in nb.grades if g.name == "explain")
            comment = next(c for c in nb.comments if c.name == "explain")
            found.append(Target(nb.id, grade.id, comment.id))
    return found


def flags(db_url: str, work: list[Target]) -> dict[str, bool]:
    with Gradebook(db_url, COURSE) as gb:
        return {
            t.notebook_id: gb.find_submission_notebook_by_id(t.notebook_id).flagged for t in work
        }


async def grade(
    client: httpx.AsyncClient,
    side: Side,
    grader: int,
    work: list[Target],
    rounds: int,
    load: Grading,
    offset: float,
) -> None:
    """One grader: per round, the next of its submissions, read, scored, commented, flagged."""

    async def call(kind: str, method: str, path: str, body: Any = None) -> bool:
        tic = time.perf_counter()
        try:
            r = await client.request(method, side.url(f"formgrader/api/{path}"), json=body)
        except httpx.HTTPError as e:
            load.failures[f"{kind}: {type(e).__name__}"] += 1
            return False
        if r.status_code != 200:
            load.failures[f"{kind}: HTTP {r.status_code}"] += 1
            return False
        load.latencies[kind].append(time.perf_counter() - tic)
        return True

    for n in range(rounds):
        target = work[n % len(work)]
        score = offset + (n + 1) / 1000  # distinct per round and per side
        text = f"grader{grader} round{n}"
        await call("GET grades", "GET", f"grades?submission_id={target.notebook_id}")
        await call("GET comments", "GET", f"comments?submission_id={target.notebook_id}")
        if await call("PUT grade", "PUT", f"grade/{target.grade_id}", {"manual_score": score}):
            load.scores[target.grade_id] = score
        if await call(
            "PUT comment", "PUT", f"comment/{target.comment_id}", {"manual_comment": text}
        ):
            load.comments[target.comment_id] = text
        if await call("POST flag", "POST", f"submitted_notebook/{target.notebook_id}/flag"):
            load.toggles[target.notebook_id] += 1


def check_writes(db_url: str, load: Grading, flagged_before: dict[str, bool]) -> None:
    """Count the acknowledged writes the gradebook does not hold (last value of each grader)."""
    with Gradebook(db_url, COURSE) as gb:
        for grade_id, score in load.scores.items():
            load.lost += gb.find_grade_by_id(grade_id).manual_score != score
        for comment_id, text in load.comments.items():
            load.lost += gb.find_comment_by_id(comment_id).manual_comment != text
        for notebook_id, toggles in load.toggles.items():
            expected = flagged_before[notebook_id] ^ bool(toggles % 2)
            load.lost += gb.find_submission_notebook_by_id(notebook_id).flagged != expected
    load.checked = len(load.scores) + len(load.comments) + len(load.toggles)


async def grading_load(
    side: Side, tokens: list[str], work: list[Target], rounds: int, db_url: str, offset: float
) -> Grading:
    """Every grader at once, each on its own share of the submissions; then the read-back."""
    load = Grading()
    shares = [work[i :: len(tokens)] for i in range(len(tokens))]
    flagged_before = flags(db_url, work)
    clients = [client_for(token) for token in tokens]
    try:
        # one warm-up call each (connection, token check), not timed
        await asyncio.gather(*(c.get(side.url("formgrader/api/status")) for c in clients))
        cpu, tic = side.cpu(), time.perf_counter()
        await asyncio.gather(
            *(
                grade(client, side, i, share, rounds, load, offset)
                for i, (client, share) in enumerate(zip(clients, shares, strict=True))
            )
        )
        load.wall, load.service_cpu = time.perf_counter() - tic, side.cpu() - cpu
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    check_writes(db_url, load, flagged_before)
    return load


def client_for(token: str) -> httpx.AsyncClient:
    """A grader's HTTP client: its own connection, the hub token in every request."""
    return httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=600)


# -- the benchmark -----------------------------------------------------------------------------

OURS, THEIRS, CLI = "ours", "nbgrader's formgrader", "nbgrader autograde"
#: The unrelated call timed while an autograde runs: the students list of the course.
UNRELATED = "formgrader/api/students"


@dataclass
class Result:
    """Everything the report needs."""

    args: argparse.Namespace
    #: The gradebook's database, a DATABASES key.
    db: str
    max_workers: int
    autogrades: dict[str, Autograde]
    loads: dict[str, Grading]

    @property
    def gradebook(self) -> str:
        """What each figure's label says of the database."""
        return f"{DATABASES[self.db]} gradebook"


@dataclass(frozen=True)
class Course:
    """The course both formgraders serve, and the copy ``nbgrader autograde`` grades."""

    root: Path
    db_url: str
    cli_root: Path
    cli_db_url: str


async def bench(
    args: argparse.Namespace, db: str, hub: Hub, course: Course, students: list[str]
) -> Result:
    tokens = [new_token(hub, grader) for grader in grader_names(args.graders)]
    ours = service_process(hub, lambda part: part == "hubservices.formgrader")
    theirs = service_process(hub, lambda part: part.endswith("jupyterhub-singleuser"))
    sides = {
        OURS: Side(f"{hub.url}/services/formgrader/{COURSE}/", ours),
        THEIRS: Side(f"{hub.url}/services/{COURSE}/", theirs),
    }
    wait_for(sides[THEIRS].url("formgrader/api/status"), tokens[0], hub)
    db_url = course.db_url
    autograde_all = {OURS: autograde_ours, THEIRS: autograde_theirs}
    autogrades: dict[str, Autograde] = {}
    async with client_for(tokens[0]) as instructor, client_for(tokens[-1]) as other:
        for name, side in sides.items():
            print(f"autograde of {len(students)} submissions by {name}...", flush=True)
            (await other.get(side.url(UNRELATED))).raise_for_status()  # warm-up, not timed
            autogrades[name] = await timed_autograde(
                functools.partial(autograde_all[name], instructor, side, students),
                functools.partial(poll, other, side.url(UNRELATED), pause=args.poll_interval),
            )
            print(f"  {autogrades[name].wall:.1f}s", flush=True)
            if name == OURS:  # from the same untouched submissions as ours
                print(f"{CLI} on a copy of the course...", flush=True)
                autogrades[CLI] = await autograde_cli(course.cli_root, course.cli_db_url, students)
                print(f"  {autogrades[CLI].wall:.1f}s", flush=True)
    work = targets(db_url, students)
    loads = {}
    for offset, (name, side) in enumerate(sides.items()):
        print(f"{args.graders} graders on {name}...", flush=True)
        loads[name] = await grading_load(side, tokens, work, args.rounds, db_url, offset)
        print(f"  {loads[name].wall:.1f}s, {loads[name].lost} lost writes", flush=True)
    return Result(args, db, args.max_workers or os.cpu_count() or 2, autogrades, loads)


# -- reporting ---------------------------------------------------------------------------------


def ms(samples: list[float], p: float) -> str:
    return f"{percentile(samples, p) * 1000:.0f} ms" if samples else "-"


def grading_table(r: Result) -> list[str]:
    ours, theirs = r.loads[OURS], r.loads[THEIRS]
    a = r.args
    rows = [
        f"| {a.graders} graders at once, {a.rounds} rounds of {len(CALLS)} calls each, "
        f"{r.gradebook} | ours | nbgrader's formgrader | nbgrader's / ours |",
        "|---|---:|---:|---:|",
    ]
    for p in (50, 95):
        mine, ref = percentile(ours.all_latencies, p), percentile(theirs.all_latencies, p)
        rows.append(
            f"| grading calls, p{p} | {mine * 1000:.0f} ms | {ref * 1000:.0f} ms "
            f"| **{ref / mine:.1f}×** |"
        )
    for kind in CALLS:
        rows.append(
            f"| &nbsp;&nbsp;`{kind}` p50 / p95 "
            f"| {ms(ours.latencies[kind], 50)} / {ms(ours.latencies[kind], 95)} "
            f"| {ms(theirs.latencies[kind], 50)} / {ms(theirs.latencies[kind], 95)} | |"
        )
    rows += [
        f"| wall time of the load | {ours.wall:.1f} s | {theirs.wall:.1f} s "
        f"| {theirs.wall / ours.wall:.1f}× |",
        f"| CPU of the service's process per call | {cpu_per_call(ours)} "
        f"| {cpu_per_call(theirs)} | |",
        f"| failed calls | {failed(ours)} | {failed(theirs)} | |",
        f"| lost writes (acknowledged, not in the gradebook afterwards) "
        f"| {ours.lost} of {ours.checked} | {theirs.lost} of {theirs.checked} | |",
    ]
    return rows


def cpu_per_call(load: Grading) -> str:
    return f"{load.service_cpu / load.requests * 1000:.1f} ms"


def failed(load: Grading) -> str:
    total = sum(load.failures.values())
    detail = ", ".join(f"{kind} × {n}" for kind, n in sorted(load.failures.items()))
    return f"{total} of {load.requests}" + (f" ({detail})" if detail else "")


def unrelated_table(r: Result) -> list[str]:
    rows = [
        f"| `GET {UNRELATED}` while the autograde runs, {r.gradebook} "
        f"| ours | nbgrader's formgrader |",
        "|---|---:|---:|",
    ]
    ours, theirs = r.autogrades[OURS].unrelated, r.autogrades[THEIRS].unrelated
    for label, p in (("p50", 50), ("p95", 95), ("max", 100)):
        rows.append(f"| {label} | {ms(ours, p)} | {ms(theirs, p)} |")
    rows.append(f"| calls made | {len(ours)} | {len(theirs)} |")
    return rows


def autograde_table(r: Result) -> list[str]:
    ours, cli, theirs = r.autogrades[OURS], r.autogrades[CLI], r.autogrades[THEIRS]
    n = r.args.submissions
    return [
        f"| autograde of {n} submissions, {r.gradebook} "
        f"| ours: one request, `max_workers={r.max_workers}` "
        f"| `nbgrader autograde {ASSIGNMENT}` | nbgrader's formgrader: {n} requests |",
        "|---|---:|---:|---:|",
        f"| wall time | {ours.wall:.1f} s | {cli.wall:.1f} s | {theirs.wall:.1f} s |",
        f"| speed-up over `nbgrader autograde` | **{cli.wall / ours.wall:.2f}×** | 1× "
        f"| {cli.wall / theirs.wall:.2f}× |",
        f"| submissions graded | {ours.graded} | {cli.graded} | {theirs.graded} |",
        f"| machine CPU busy, cores of {os.cpu_count()} | {ours.busy_cores:.2f} "
        f"| {cli.busy_cores:.2f} | {theirs.busy_cores:.2f} |",
    ]


def verdicts(r: Result) -> list[str]:
    ours, theirs = r.loads[OURS], r.loads[THEIRS]
    p95, ref95 = percentile(ours.all_latencies, 95), percentile(theirs.all_latencies, 95)
    worst = max(r.autogrades[OURS].unrelated)
    speedup = r.autogrades[CLI].wall / r.autogrades[OURS].wall
    failed_writes = sum(n for kind, n in ours.failures.items() if not kind.startswith("GET"))

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    return [
        f"- grading p95 no worse than nbgrader's own: {verdict(p95 <= ref95)} "
        f"({p95 * 1000:.0f} ms against {ref95 * 1000:.0f} ms)",
        f"- unrelated call under 200 ms during an autograde, every call: "
        f"{verdict(worst < 0.2)} (max {worst * 1000:.0f} ms)",
        f"- autograde at least 1.8× faster than `nbgrader autograde` on {os.cpu_count()} cores: "
        f"{verdict(speedup >= 1.8)} ({speedup:.2f}×)",
        f"- zero lost writes: {verdict(ours.lost == 0 and failed_writes == 0)} "
        f"({ours.lost} lost, {failed_writes} failed write calls; nbgrader's: {theirs.lost} lost)",
    ]


def command_line(args: argparse.Namespace) -> str:
    return (
        ".venv/bin/python -m bench.formgrader_bench"
        f" --graders={args.graders} --submissions={args.submissions} --rounds={args.rounds}"
        + (f" --max-workers={args.max_workers}" if args.max_workers else "")
        + (f" --db={args.db}" if args.db != "both" else "")
        + " --write-docs"
    )


def formgrader_section(results: list[Result]) -> str:
    a = results[0].args
    gradebooks = " and ".join(r.gradebook for r in results)
    body = [
        f"Our formgrader and nbgrader {nbgrader.__version__}'s own, on one JupyterHub "
        f"{jupyterhub.__version__} behind one configurable-http-proxy, on the same course "
        f"directory and the same gradebook, with our service's own tables next to it: a run "
        f"on each database ({gradebooks}; SQLite is nbgrader's default, PostgreSQL a private "
        f"server the benchmark starts), each on a hub and a course of its own. "
        f"nbgrader's runs as nbgrader's \"Using nbgrader with JupyterHub\" documents it for a "
        f"class with several graders: a managed hub service named after the course "
        f"(`{COURSE}`) running `jupyterhub-singleuser` (nbgrader's formgrader server extension "
        f"enabled, as `pip install nbgrader` leaves it) in the grader account's home with the "
        f"course inside it and `nbgrader_config.py` in `~/.jupyter`; graders in "
        f"`formgrade-{COURSE}` with a role that may access it (its example's `--debug` left "
        f"out: it logs every request). Ours is the `formgrader` service with the course in its "
        f"config and defaults otherwise. Every call goes through the proxy with a hub API "
        f"token of a grader.",
        "",
        f"The course: assignment `{ASSIGNMENT}` made with `nbgrader generate_assignment` from "
        f"one notebook: `word_counts(text)` to write (autograded: a test cell worth 3 points "
        f"checks small cases, then 100,000 random words against `collections.Counter`) and a "
        f"sentence to write (graded by hand, 2 points). {a.submissions} students' notebooks "
        f"are written into `submitted/` (one in five gets the case wrong, so its test fails). "
        f"Then, one after the other:",
        "",
        f"- autograde of every submission by ours (`POST api/assignment/{ASSIGNMENT}/autograde`"
        f", parallel workers) and by nbgrader's (one `POST formgrader/api/submission/"
        f"{ASSIGNMENT}/<student>/autograde` after the other, as its page sends them; it has no "
        f"autograde-all), while another grader calls `GET {UNRELATED}` on the same service "
        f"again and again ({a.poll_interval} s apart); nbgrader's re-grades what ours graded "
        f"(it forces);",
        f"- between the two, `nbgrader autograde {ASSIGNMENT}` on a copy of the course made "
        f"before any autograde, the hub idle;",
        f"- {a.graders} graders at once (asyncio, httpx, one connection each), each on its own "
        f"share of the {a.submissions} submissions, {a.rounds} rounds of the grading page's "
        f"calls on one submission: `GET formgrader/api/grades?submission_id=`, `GET "
        f"formgrader/api/comments?submission_id=`, `PUT formgrader/api/grade/<id>` (a score "
        f"no other round writes), `PUT formgrader/api/comment/<id>`, `POST formgrader/api/"
        f"submitted_notebook/<id>/flag`; ours first, then nbgrader's. Afterwards every grade, "
        f"comment and flag a grader wrote is read back from the gradebook: the last value "
        f"acknowledged (HTTP 200) must be there, and a flag must be where the acknowledged "
        f"toggles leave it.",
        "",
        *figures(results),
        "",
        "Where the differences come from:",
        "",
        "- Grading: nbgrader's formgrader answers every call on its event loop, with one "
        "database session for all requests. Ours runs each call in a session of its own, on "
        "the course's gradebook thread (one thread: SQLite has one writer at a time), so the "
        "event loop stays free and every read sees what the workers and the other graders "
        "wrote. The price is SQL: a new session has nothing loaded, so `GET grades` reads "
        "again the cells, notebook, assignment and student that nbgrader's session still "
        "holds (CPU per call in the table). nbgrader's shared session in turn shows the "
        "scores from before an autograde run by another process until its own next write.",
        "- Unrelated call: nbgrader's formgrader autogrades in its event loop, so the call "
        "waits for the submission being graded. Ours autogrades in worker processes.",
        "- Autograde: ours runs `max_workers` (default: the number of cores) worker "
        "processes, each importing nbgrader once and then taking submission after "
        "submission; each submission is the same work as in `nbgrader autograde` (a kernel "
        "started, the notebook run, the gradebook written), which leaves a core idle while "
        "a kernel starts and stops. Ours runs each student's kernel in the bubblewrap "
        "sandbox (the default; see docs/formgrader.md), nbgrader's runs it as the grader.",
        "",
        "Command (from the project root; several minutes; run with nothing else on the machine; "
        "`--db=sqlite` or `--db=postgresql` measures on one database only):",
    ]
    return docs_section("Formgrader", body, command_line(a))


def figures(results: list[Result]) -> list[str]:
    """The tables and the targets of each database, for the docs and the terminal alike."""
    lines = []
    for r in results:
        tables = [grading_table(r), unrelated_table(r), autograde_table(r)]
        lines += [line for table in tables for line in [*table, ""]]
        lines += [f"Targets, {r.gradebook}:", "", *verdicts(r), ""]
    return lines[:-1]


def report(results: list[Result]) -> str:
    command = command_line(results[0].args)
    return "\n".join(["", *figures(results), "", f"command: {command}"])


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graders", type=int, default=10, help="graders grading at once")
    parser.add_argument("--submissions", type=int, default=30, help="students who submitted")
    parser.add_argument("--rounds", type=int, default=20, help="submissions each grader grades")
    parser.add_argument(
        "--max-workers", type=int, help="our service's max_workers (default: its own default)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.1, help="seconds between unrelated calls"
    )
    add_db_option(parser)
    add_output_options(parser, "Formgrader")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # nbgrader runs `alembic` from PATH when it creates a gradebook
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join(filter(None, [bindir, os.environ.get("PATH")]))
    work = Path(tempfile.mkdtemp(prefix="formgrader-bench-"))
    print(f"working in {work}", flush=True)
    try:
        with Databases(work) as dbs:
            results = [run_on(args, db, work / db, dbs) for db in chosen_databases(args)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    section = formgrader_section(results) if args.write_docs else None
    return publish("Formgrader", report(results), section)


def run_on(args: argparse.Namespace, db: str, work: Path, dbs: Databases) -> Result:
    """The whole benchmark with the gradebook (and our service's tables) in a ``db``
    database: a course, its copy and a hub of its own, in ``work``."""
    print(f"-- on {DATABASES[db]}", flush=True)
    work.mkdir()
    root = work / f"grader-{COURSE}" / COURSE

    def gradebook_url(name: str, course_root: Path) -> str:
        if db == "sqlite":  # nbgrader's default place
            return default_gradebook(course_root)
        return dbs.new(db, name)

    cli_root = work / "copy" / COURSE
    course = Course(
        root, gradebook_url("gradebook", root), cli_root, gradebook_url("cli", cli_root)
    )
    students = [f"student{i:02d}" for i in range(args.submissions)]
    our_args = [
        f"--config={write_configs(work, root, course.db_url)}",
        f"--db-url={dbs.new(db, f'formgrader_{db}')}",
    ]
    if args.max_workers:
        our_args.append(f"--max-workers={args.max_workers}")
    hub = Hub(
        work / "hub",
        services=["formgrader"],
        service_args={"formgrader": our_args},
        extra_config=reference_hub_config(
            COURSE, root.parent, grader_names(args.graders), free_port()
        ),
    )

    def setup() -> None:
        # the copy made the same way (same students, same answers) on a gradebook of its own
        make_course(course.root, students, course.db_url)
        make_course(course.cli_root, students, course.cli_db_url)

    run = functools.partial(bench, args, db, hub, course, students)
    return run_on_hub(hub, work, run, keep=True, setup=setup)


if __name__ == "__main__":
    sys.exit(main())
