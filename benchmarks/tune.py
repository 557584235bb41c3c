"""What `lightseg tune` costs and what pruning saves, on the quickstart.

    python benchmarks/tune.py [--repeats 3] [--trials 12] [--epochs 5] [--num-train 200]

1. Per-trial overhead: a plain `lightseg fit` against a one-trial study of the same run (the
   space holds one choice: the trial trains exactly what the fit trains), alternated
   `--repeats` times in this process. The study's own cost is its wall time less the fit's,
   less the report at its end (table, fANOVA, plots, best.yaml), which is timed apart.
2. Pruning: the same `--trials`-trial study of configs/tune/quickstart_space.yaml with the
   median pruner and without (the random sampler with one seed: both studies try the same
   values), its wall time and best score.

Both tables are printed and appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from lightseg.cli import main as cli_main
from lightseg.tune.command import tune_main

from report import ROOT, record

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
SPACE = str(ROOT / "configs" / "tune" / "quickstart_space.yaml")


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def in_scratch(run: Callable[[Path], None]) -> float:
    """Run in a new folder as the working directory; seconds taken."""
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            return timed(lambda: run(Path(scratch)))
        finally:
            os.chdir(here)


def overhead(fit_args: list[str], repeats: int) -> str:
    fits, tunes, reports = [], [], []
    in_scratch(lambda _: cli_main(["fit", *fit_args, "--trainer.max_epochs=1"]))  # writes the shapes set: untimed
    for _ in range(repeats):
        fits.append(in_scratch(lambda _: cli_main(["fit", *fit_args])))

        def one_trial(folder: Path) -> None:
            space = folder / "space.yaml"
            space.write_text("model.init_args.loss: {type: categorical, choices: [ce+dice]}\n")  # the config's own
            tune_main([*fit_args, "--tune.space", str(space), "--tune.n_trials", "1"])
            study = optuna.load_study(
                study_name="quickstart", storage=f"sqlite:///{folder}/runs/tune/quickstart/study.db"
            )
            from lightseg.tune.results import report

            reports.append(timed(lambda: report(study, folder / "runs" / "tune" / "quickstart")))

        tunes.append(in_scratch(one_trial))
    fit, tune, rep = statistics.median(fits), statistics.median(tunes), statistics.median(reports)
    study_cost = tune - fit - rep
    return "\n".join([
        "| run | median wall time |",
        "|---|---:|",
        f"| `lightseg fit` | {fit:.1f} s |",
        f"| `lightseg tune`, one trial of the same run | {tune:.1f} s |",
        f"| of which the report (table, fANOVA, plots, best.yaml) | {rep:.1f} s |",
        f"| the study's own cost per trial (tune - fit - report) | {study_cost:.1f} s "
        f"({study_cost / fit:+.1%} of the fit) |",
        "",
        f"Median of {repeats} alternated runs in one process; fit options: `{' '.join(fit_args[2:])}`.",
    ])  # fmt: skip


def pruning(fit_args: list[str], trials: int) -> str:
    rows = []
    for pruner in ("none", "median"):
        result: dict[str, optuna.Study] = {}

        def study(folder: Path, pruner: str = pruner, result: dict[str, optuna.Study] = result) -> None:
            tune_main([*fit_args, "--tune.space", SPACE, "--tune.n_trials", str(trials), "--tune.pruner", pruner,
                       "--tune.sampler", "random", "--tune.seed", "0"])  # fmt: skip
            storage = f"sqlite:///{folder}/runs/tune/quickstart/study.db"
            result["study"] = optuna.load_study(study_name="quickstart", storage=storage)

        seconds = in_scratch(study)
        finished = result["study"].get_trials()
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in finished)
        epochs = sum(int(t.user_attrs.get("epochs", 0)) for t in finished)
        best = result["study"].best_trial
        rows.append(f"| {pruner} | {seconds:.0f} s | {pruned} of {len(finished)} | {epochs} | "
                    f"{best.value:.4f} (trial {best.number}) |")  # fmt: skip
    saved = 1 - float(rows[1].split("|")[2].strip(" s")) / float(rows[0].split("|")[2].strip(" s"))
    return "\n".join([
        "| pruner | study wall time | pruned | epochs trained | best val_miou |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Pruning saved {saved:.0%} of the study's time. {trials} trials of configs/tune/quickstart_space.yaml, "
        f"random sampler (seed 0, the same values in both), median pruner with 5 startup trials; fit options: "
        f"`{' '.join(fit_args[2:])}`.",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LIGHTSEG_CACHE", tempfile.mkdtemp())  # the shapes set, written once
    fit_args = ["--config", QUICKSTART, f"--trainer.max_epochs={args.epochs}",
                f"--data.init_args.num_train={args.num_train}", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false"]  # fmt: skip
    if not args.skip_overhead:
        record("lightseg tune: the study's cost per trial", overhead(fit_args, args.repeats))
    record("lightseg tune: what pruning saves", pruning(fit_args, args.trials))


if __name__ == "__main__":
    main()
