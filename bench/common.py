"""What every benchmark reports the same way: percentiles, the machine, docs/benchmarks.md."""

from __future__ import annotations

import math
import os
import platform
import re
import textwrap
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p``th percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def machine() -> str:
    """The machine a figure was measured on, for the docs."""
    model = ""
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return (
        f"{os.cpu_count()} cores ({model or platform.processor()}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting for I/O)."""
    t = psutil.cpu_times()
    not_busy = ("idle", "iowait", "guest", "guest_nice")  # guest time is counted in user too
    return sum(t) - sum(getattr(t, name, 0.0) for name in not_busy)


def wrap(line: str, width: int = 100) -> str:
    """Prose and bullets wrapped like the rest of the docs; table rows, commands stay whole."""
    if line.startswith(("|", ".venv/")) or len(line) <= width:
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(
        line, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
    )


def write_section(title: str, section: str, path: Path = DOCS) -> None:
    """Replace the ``## <title>`` section of docs/benchmarks.md, keeping every other section."""
    if path.exists():
        text = path.read_text()
    else:
        text = (
            "# Benchmarks\n\nMeasured figures for the services, and the commands that give them.\n"
        )
    pattern = re.compile(rf"^## {re.escape(title)}\b.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")
