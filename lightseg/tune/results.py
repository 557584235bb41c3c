"""What a study leaves: the table of its trials, the parameters' importances, ``best.yaml`` and plots."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from lightseg.errors import LightsegError
from lightseg.run_folder import display_path

STATE_WORDS = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
               TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}  # fmt: skip


def short_name(key: str) -> str:
    """A parameter's key without its ``init_args`` levels."""
    return ".".join(part for part in key.split(".") if part != "init_args")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(study: optuna.Study) -> str:
    """The study's trials as a text table (number, state, value, parameters, epochs, time), failures below it."""
    metric = str(study.user_attrs.get("metric", "value"))
    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    header = ["trial", "state", metric, *(short_name(k) for k in keys), "epochs", "time"]
    rows = []
    best = _best(study)
    for trial in trials:
        state = STATE_WORDS.get(trial.state, trial.state.name.lower())
        if trial.user_attrs.get("interrupted"):
            state = "interrupted"
        value = f"{trial.value:.4f}" if trial.value is not None else ""
        if best is not None and trial.number == best.number:
            value += " *"
        seconds = trial.user_attrs.get("seconds")
        rows.append(
            [str(trial.number), state, value, *(_value(trial.params[k]) if k in trial.params else "" for k in keys),
             str(trial.user_attrs.get("epochs", "")), f"{seconds:.0f} s" if seconds is not None else ""]
        )  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    failed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("reason")]
    lines += [f"trial {t.number}: {t.user_attrs['reason']}" for t in failed]
    if best is not None:
        lines.append(f"* the best trial ({study.direction.name.lower()} {metric})")
    return "\n".join(lines)


def _best(study: optuna.Study) -> FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return study.best_trial if complete else None


def importances(study: optuna.Study) -> dict[str, float] | None:
    """Each parameter's importance for the metric (fANOVA over the complete trials); ``None`` with fewer than 2."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.distributions for t in complete):
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):  # e.g. every complete trial with the same parameters
        return None
    return {short_name(k): float(v) for k, v in found.items()}


def importance_lines(study: optuna.Study) -> str:
    """The importances as text, or why there are none yet."""
    found = importances(study)
    if found is None:
        return "parameter importances: after two complete trials with different values"
    width = max(len(k) for k in found)
    return "\n".join(["parameter importances (fANOVA):", *(f"  {k:<{width}}  {v:.3f}" for k, v in found.items())])


def write_best_config(study: optuna.Study, folder: Path) -> Path | None:
    """Write the best trial's complete config as ``folder/best.yaml``; ``lightseg fit --config`` reproduces it.

    The run folder is the only change: ``folder/best/version_N`` instead of the trial's.
    """
    best = _best(study)
    if best is None:
        return None
    run = best.user_attrs.get("run_dir")
    source = Path(run) / "config.yaml" if run else None
    if source is None or not source.is_file():
        raise LightsegError(
            f"the best trial's config ({source or 'its run folder'}) is missing: was the study folder moved? "
            "best.yaml is written from it"
        )
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(folder / "best")
    logger = trainer.get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
        logger["init_args"].update(save_dir=str(folder), name="best")
        logger["init_args"].pop("version", None)
        if "id" in logger["init_args"]:  # a W&B run id: the reproduction is a new run
            logger["init_args"]["id"] = None
    metric = study.user_attrs.get("metric", "value")
    params = ", ".join(f"{short_name(k)}={_value(v)}" for k, v in best.params.items())
    header = (
        f"# The best trial of study {study.study_name!r}: trial {best.number}, {metric} {best.value:.4f} ({params}).\n"
        f"# lightseg fit --config {display_path(folder / 'best.yaml')} reproduces it "
        f"(run folder {display_path(folder / 'best')}).\n"
    )
    path = folder / "best.yaml"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """The study's pictures as PNG files in ``folder``.

    The optimisation history, the learning curves (pruned trials stop early), the metric against
    each parameter and the importances.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Any] = {
        "history": plots.plot_optimization_history,
        "learning_curves": plots.plot_intermediate_values,
        "parameters": plots.plot_slice,
    }
    if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        del makers["learning_curves"]
    if importances(study) is not None:
        makers["importances"] = lambda s: plots.plot_param_importances(
            s, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    metric = str(study.user_attrs.get("metric", "value"))
    titles = {
        "history": f"{metric} of each trial",
        "learning_curves": f"{metric} after each epoch (pruned trials stop early)",
        "parameters": f"{metric} against each parameter",
        "importances": f"Parameter importances for {metric}",
    }
    written = []
    for name, make in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = make(study)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        _relabel(figure, metric, titles[name])
        width = 4.0 * len(figure.axes) + 1 if name == "parameters" else 9.0
        figure.set_size_inches(width, 5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a colour bar's axes: laid out well enough
            figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def _relabel(figure: Any, metric: str, title: str) -> None:
    """Optuna's words (``Objective Value``, ``Step``, full keys) as a lightseg user reads them."""
    words = {"Objective Value": metric, "Intermediate Value": metric, "Step": "epoch", "Trial": "trial",
             "Hyperparameter": "parameter", "Hyperparameter Importance": "importance"}  # fmt: skip
    for axes in figure.axes:
        for get, set_ in ((axes.get_xlabel, axes.set_xlabel), (axes.get_ylabel, axes.set_ylabel)):
            label = get()
            set_(words.get(label, short_name(label) if "." in label else label))
        for loc in ("center", "left"):
            if axes.get_title(loc=loc):
                axes.set_title(title, loc=loc)
        ticks = axes.get_yticklabels()
        if any("." in t.get_text() for t in ticks):  # the importances' bars, one per parameter
            axes.set_yticks(axes.get_yticks(), [short_name(t.get_text()) for t in ticks])
        legend = axes.get_legend()
        for text in legend.get_texts() if legend is not None else []:
            text.set_text(
                {"Objective Value": metric, "Best Value": f"best {metric} so far"}.get(text.get_text(), text.get_text())
            )
    if figure.get_suptitle():
        figure.suptitle(title)


def report(study: optuna.Study, folder: Path) -> str:
    """The study's table and importances; writes ``best.yaml`` and the plots into ``folder``; returns the text."""
    lines = [trials_table(study), "", importance_lines(study)]
    best = write_best_config(study, folder)
    plots = write_plots(study, folder / "plots")
    if best is not None:
        lines += ["", f"best config: {display_path(best)}", f"  lightseg fit --config {display_path(best)}"]
    if plots:
        lines.append(f"plots: {display_path(folder / 'plots')}/ ({', '.join(p.name for p in plots)})")
    return "\n".join(lines)
