"""How long the first keystroke takes: each quick command beside `python -c "import torch"`.

    python benchmarks/startup.py [--runs 5]

Every command runs as a new process (as a user types it), `--runs` times; the table holds
the median wall time of each and appends itself to docs/benchmarks.md. The target: the
quick commands (help, version, a mistyped command) take no longer than importing torch.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from report import record

COMMANDS = {
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "lightseg --version": ["lightseg", "--version"],
    "lightseg --help": ["lightseg", "--help"],
    "lightseg data check --help": ["lightseg", "data", "check", "--help"],
    "lightseg fitt (a typo)": ["lightseg", "fitt"],
    "lightseg fit --help (the full CLI)": ["lightseg", "fit", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("lightseg") is None:
        sys.exit("the lightseg console script is not on PATH: install the project first (see the README)")
    times = {}
    for name, command in COMMANDS.items():
        runs = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=False)
            runs.append(time.perf_counter() - start)
        times[name] = statistics.median(runs)
    base = times['python -c "import torch"']
    rows = ["| command | median wall time | vs import torch |", "|---|---:|---:|"]
    rows += [f"| `{name}` | {t:.2f} s | {t / base:.2f}x |" for name, t in times.items()]
    record("Start-up (new process each)", "\n".join(rows) + f"\n\nMedian of {args.runs} runs of each command.")


if __name__ == "__main__":
    main()
