"""How long the README's test command takes, and where its time goes.

    python benchmarks/suite.py [PYTEST_ARGS ...]     e.g. -n 0 for one process (no workers)

Runs `python -m pytest --durations=30 -q PYTEST_ARGS` (the README's test command, whose
options in pyproject.toml start one worker per core with pytest-xdist), then prints and
appends to docs/benchmarks.md the wall time, the CPU time of the whole process tree, the
test count and the 30 slowest test phases. The target (issue 33): under 10 minutes on two
cores.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time

from report import ROOT, record

DURATION = re.compile(r"^(\d+\.\d+)s (call|setup|teardown)\s+(.+)$")
SUMMARY = re.compile(r"^=* ?(\d+ passed.*) in ([\d.]+)s")


def main() -> None:
    extra = sys.argv[1:]
    command = [sys.executable, "-m", "pytest", "--durations=30", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.splitlines()
    summary = next((m for line in reversed(lines) if (m := SUMMARY.match(line))), None)
    if done.returncode != 0 or summary is None:
        sys.exit(f"the suite did not pass (exit {done.returncode}):\n" + "\n".join(lines[-40:]))
    slowest = [m.groups() for line in lines if (m := DURATION.match(line))]
    options = " ".join(extra) or "as configured (-n auto)"
    table = [
        f"| `python -m pytest` {options} | value |",
        "|---|---|",
        f"| wall time | {wall / 60:.1f} min ({wall:.0f} s) |",
        f"| CPU time, all processes (user + system) | {(children.ru_utime + children.ru_stime) / 60:.1f} min |",
        f"| result | {summary.group(1)} |",
        "",
        "| slowest test phases | s |",
        "|---|---:|",
        *(f"| {phase} `{name}` | {float(seconds):.1f} |" for seconds, phase, name in slowest),
    ]
    record("Test suite", "\n".join(table))


if __name__ == "__main__":
    main()
