"""``lightseg tune``: the space and its checks, a study that prunes, continues and reports, failures, Ctrl-C."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage
from PIL import Image

from lightseg.cli import build_cli
from lightseg.entry import main
from lightseg.errors import LightsegError
from lightseg.tune import SearchSpace, TuneSettings, split_arguments
from lightseg.tune.trial_callbacks import TrialPruning

from conftest import ROOT, TINY_SHAPES

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def fit_args(shapes_root: Path, *extra: str) -> list[str]:
    return [
        "--config", QUICKSTART, *TINY_SHAPES, f"--data.init_args.root={shapes_root}", "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *extra,
    ]  # fmt: skip


def write_space(folder: Path, text: str) -> str:
    path = folder / "space.yaml"
    path.write_text(text)
    return str(path)


def load(study_dir: Path, name: str = "quickstart") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}")


@pytest.mark.parametrize(
    ("spec", "words"),
    [("lr: {type: float, low: 0.1, high: 0.01}", "lr: low 0.1 is above high 0.01"),
     ("lr: {type: float, low: 0, high: 0.01, log: true}", "a log scale needs low above 0, got 0"),
     ("lr: {type: float, low: 0.001, high: 0.01, log: true, step: 0.001}", "give log or step, not both"),
     ("lr: {type: float, low: 0.001, hihg: 0.01}", "float takes low, high, log, step, not hihg"),
     ("lr: {type: uniform, low: 0.001, high: 0.01}", "type 'uniform' is not valid; choose one of float, int, "),
     ("n: {type: int, low: 1, high: 5.5}", "int needs a whole number for high, got 5.5"),
     ("loss: {type: categorical, choices: []}", "categorical needs a non-empty list of choices"),
     ("loss: {type: categorical, choices: [{a: 1}]}", "choices must be numbers, text, booleans or null"),
     ("loss: {type: categorical, choices: [ce, ce]}", "choices repeat a value"),
     ("loss: ce", "expected a distribution such as"),
     ("- lr", "expected a mapping of options to distributions"),
     ("lr: {type: float, low: [", "not valid YAML (line 1)")],
)  # fmt: skip
def test_a_mistake_in_the_space_is_one_line(spec: str, words: str, tmp_path: Path) -> None:
    path = write_space(tmp_path, spec)
    with pytest.raises(LightsegError) as error:
        SearchSpace.load(path)
    assert words in str(error.value)
    assert str(error.value).startswith(f"search space {path}")
    assert "\n" not in str(error.value)


def test_the_space_reads_each_kind_and_spells_its_options() -> None:
    space = SearchSpace.from_dict({
        "--model.init_args.optimizer.init_args.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "data.init_args.batch_size": {"type": "int", "low": 4, "high": 16, "step": 4},
        "model.init_args.loss": {"type": "categorical", "choices": ["ce", "ce+dice", None]},
    })  # fmt: skip
    lr, batch, loss = space.parameters
    assert (lr.key, lr.short_name, lr.low, lr.high, lr.log) == (
        "model.init_args.optimizer.init_args.lr", "model.optimizer.lr", 1e-4, 1e-2, True)  # fmt: skip
    assert batch.candidates() == [4, 16] and loss.candidates() == ["ce", "ce+dice", None]
    assert space.arguments(
        {"model.init_args.optimizer.init_args.lr": 0.003, "data.init_args.batch_size": 8, "model.init_args.loss": None}
    ) == [
        "--model.init_args.optimizer.init_args.lr=0.003",
        "--data.init_args.batch_size=8",
        "--model.init_args.loss=null",
    ]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = space.suggest(trial)
    assert 1e-4 <= values[lr.key] <= 1e-2 and values[batch.key] in (4, 8, 12, 16) and values[loss.key] in loss.choices


def test_the_command_line_splits_into_tune_and_fit_options() -> None:
    settings, rest = split_arguments(
        ["--config", "a.yaml", "--tune.space", "s.yaml", "--tune.n_trials=7", "--trainer.max_epochs", "3",
         "--tune.pruner", "halving", "--tune.timeout", "60", "--tune.report", "false"]
    )  # fmt: skip
    assert rest == ["--config", "a.yaml", "--trainer.max_epochs", "3"]
    assert settings == TuneSettings(space="s.yaml", n_trials=7, pruner="halving", timeout=60.0, report=False)
    with pytest.raises(LightsegError, match=r"unknown option '--tune.n_trial' \(did you mean '--tune.n_trials'\?\)"):
        split_arguments(["--tune.space", "s.yaml", "--tune.n_trial", "3"])
    with pytest.raises(LightsegError, match="pruner 'hyperband' is not valid; choose one of median, halving, none"):
        split_arguments(["--tune.space", "s.yaml", "--tune.pruner", "hyperband"])
    with pytest.raises(LightsegError, match="needs a search space"):
        split_arguments(["--config", "a.yaml"])
    with pytest.raises(LightsegError, match="n_trials: invalid int value: 'many'"):
        split_arguments(["--tune.space", "s.yaml", "--tune.n_trials", "many"])


@pytest.mark.parametrize(
    ("spec", "words"),
    [("model.init_args.optimizer.init_args.lrr: {type: float, low: 0.001, high: 0.01}",
      "model.init_args.optimizer.init_args.lrr: model.optimizer: unknown option 'lrr'"),
     ("model.init_args.loss: {type: categorical, choices: [ce, cee]}",
      "model.init_args.loss (choice 'cee'): model.loss: 'cee' is not valid; (did you mean 'ce'?)"),
     ("data.init_args.batch_size: {type: float, low: 2, high: 8}", "data.init_args.batch_size: data.loader.batch_size: "
      "expected int, got '2.0'"),
     ("model.init_args.optimizer.init_args.lr: {type: float, low: -0.1, high: 0.01}",
      "model.optimizer.lr must be >= 0, got -0.1"),
     # a network setting in its older flat spelling is the group's ('unet' passes, as the group's choice)
     ("model.init_args.arch: {type: categorical, choices: [unet, unett]}",
      "model.init_args.arch (choice 'unett'): model.network.arch: 'unett' is not valid; (did you mean 'unet'?)")],
)  # fmt: skip
def test_the_space_is_checked_against_the_config_before_any_trial(
    spec: str, words: str, shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, spec)
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", *fit_args(shapes_root), "--tune.space", space])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lightseg: error: search space {space}: {err[0].split(f'search space {space}: ')[1]}"]
    assert words in err[0]
    assert not (tmp_path / "runs" / "tune" / "quickstart" / "trials").exists()  # no trial started


def test_a_study_prunes_continues_reports_and_its_best_config_reproduces(
    shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 0 learns (lr 0.003); trial 1 barely moves (lr 1e-6) and is pruned after its first validation;
    # the random sampler's seed makes the order known
    space = write_space(
        tmp_path,
        "model.init_args.optimizer.init_args.lr: {type: categorical, choices: [0.003, 1.0e-6]}\n"
        "model.init_args.loss: {type: categorical, choices: [ce, ce+dice]}\n",
    )
    tune = ["tune", *fit_args(shapes_root), "--tune.space", space, "--tune.sampler", "random", "--tune.seed", "6",
            "--tune.startup_trials", "1"]  # fmt: skip
    main([*tune, "--tune.n_trials", "3"])
    out, err = capsys.readouterr()
    study_dir = tmp_path / "runs" / "tune" / "quickstart"
    study = load(study_dir)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    lrs = [t.params["model.init_args.optimizer.init_args.lr"] for t in trials]
    states = [t.state for t in trials]
    assert lrs[0] == 0.003 and states[0] == optuna.trial.TrialState.COMPLETE
    slow = [i for i, lr in enumerate(lrs) if lr == 1e-6]
    assert slow, lrs
    for i in slow:  # pruned after one validation, below trial 0's value there
        assert states[i] == optuna.trial.TrialState.PRUNED and trials[i].user_attrs["epochs"] == 1
        assert trials[i].intermediate_values[0] < trials[0].intermediate_values[0]
    # every trial is an ordinary run: its own folder, its config holds the sampled values
    for trial in trials:
        config = yaml.safe_load((Path(trial.user_attrs["run_dir"]) / "config.yaml").read_text())
        assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == trial.params[
            "model.init_args.optimizer.init_args.lr"]  # fmt: skip
        assert config["model"]["init_args"]["loss"] == trial.params["model.init_args.loss"]
        assert Path(trial.user_attrs["run_dir"]).is_relative_to(Path("runs/tune/quickstart/trials"))
    assert f"lightseg tune: trial 0 val_miou {trials[0].value:.4f}" in err
    table = out[out.index("trial  state") :]
    assert re.search(rf"(?m)^0\s+complete\s+{trials[0].value:.4f}", table)
    assert "model.optimizer.lr" in table and "model.loss" in table
    for i in slow:
        assert re.search(rf"(?m)^{i}\s+pruned\s", table)
    assert "best config: runs/tune/quickstart/best.yaml" in out

    # the same command with a larger n_trials continues the study: one more trial, numbered on
    main([*tune, "--tune.n_trials", "4"])
    capsys.readouterr()
    assert [t.number for t in load(study_dir).get_trials()] == [0, 1, 2, 3]
    # the report alone runs nothing
    main([*tune, "--tune.report", "true"])
    out = capsys.readouterr().out
    assert len(load(study_dir).get_trials()) == 4 and re.search(r"(?m)^3\s+\w+", out)
    for name in ("history", "learning_curves", "parameters"):
        with Image.open(study_dir / "plots" / f"{name}.png") as picture:
            assert picture.size[1] == 500 and picture.size[0] >= 900, name

    # best.yaml: the best trial's config, in a run folder of its own; fitting it gives the same score
    best = load(study_dir).best_trial
    text = (study_dir / "best.yaml").read_text()
    assert text.startswith(f"# The best trial of study 'quickstart': trial {best.number}, val_miou {best.value:.4f}")
    config = yaml.safe_load(text)
    assert config["trainer"]["logger"]["init_args"]["name"] == "best"
    assert config["seed_everything"] == 0
    cli = build_cli(["fit", "--config", str(study_dir / "best.yaml")])
    checkpoint = cli.trainer.checkpoint_callback
    assert float(checkpoint.best_model_score) == pytest.approx(best.value, abs=1e-6)  # type: ignore[union-attr]
    assert Path(checkpoint.best_model_path).resolve().is_relative_to(study_dir / "best")  # type: ignore[union-attr]


def test_a_failed_trial_is_recorded_with_its_reason_and_the_study_goes_on(
    shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "model.init_args.optimizer.init_args.lr: {type: categorical, choices: [1.0e+30]}")
    journal = tmp_path / "shared" / "study.log"  # Optuna's journal file: a study on a shared file system
    main(["tune", *fit_args(shapes_root), "--tune.space", space, "--tune.n_trials", "2",
          "--tune.storage", f"journal:{journal}"])  # fmt: skip
    out, err = capsys.readouterr()
    storage = JournalStorage(JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="quickstart", storage=storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    reason = "the training loss became NaN or infinite in epoch 0"
    assert [t.user_attrs["reason"] for t in trials] == [reason] * 2
    assert f"trial 1: {reason}" in out and f"lightseg tune: trial 0 failed: {reason}" in err
    assert "Traceback" not in err and "best config" not in out


def test_a_metric_the_task_does_not_log_stops_the_study_in_one_line(
    shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "model.init_args.loss: {type: categorical, choices: [ce]}")
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", *fit_args(shapes_root), "--tune.space", space, "--tune.metric", "val_iou",
              "--tune.n_trials", "3"])  # fmt: skip
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lightseg: error: --tune.metric val_iou is not logged by the task; its validation metrics:")
    assert "val_miou" in last
    assert len(load(tmp_path / "runs" / "tune" / "quickstart").get_trials()) == 1


def test_ctrl_c_ends_the_trial_and_the_same_command_continues(shapes_root: Path, tmp_path: Path) -> None:
    space = write_space(tmp_path, "model.init_args.loss: {type: categorical, choices: [ce, ce+dice]}")
    args = ["tune", *fit_args(shapes_root), "--tune.space", space, "--tune.n_trials", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lightseg", *args, "--trainer.max_epochs=200"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as a terminal starts it: a pytest started in the background by a script ignores SIGINT, its children
        # inherit that, and Python then installs no KeyboardInterrupt handler (the test would wait in vain)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert process.stderr is not None
    seen = ""
    started = time.monotonic()
    while "lightseg tune: trial 0:" not in seen and time.monotonic() - started < 120:
        line = process.stderr.readline()
        if not line:
            break
        seen += line
    assert "lightseg tune: trial 0:" in seen, seen
    # into the trial's training: its first epoch's checkpoint written (a fixed wait can race a loaded machine)
    while not any((tmp_path / "runs").rglob("last.ckpt")) and time.monotonic() - started < 120:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, rest = process.communicate(timeout=120)
    err = seen + rest
    assert process.returncode == 130, err
    assert "lightseg: the study stopped (Ctrl-C); to continue it:\n  lightseg tune" in err
    assert re.search(r"(?m)^0\s+interrupted\s", out), out
    assert "Traceback" not in err and "last-interrupted.ckpt" not in err
    # the same command continues: the interrupted trial does not count toward n_trials
    main(args)
    trials = load(tmp_path / "runs" / "tune" / "quickstart").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["reason"] == "interrupted (Ctrl-C)"


def _postgres_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server on a free local port, for this module's tests; its URL.

    ``.ci/run`` installs the system's PostgreSQL where it is missing; elsewhere the test skips
    without it (and fails where ``LIGHTSEG_REQUIRE_POSTGRES`` is set, as CI sets it).
    """
    binaries = _postgres_binaries()
    if binaries is None:
        reason = "PostgreSQL is not installed (initdb not found): apt-get install postgresql"
        if os.environ.get("LIGHTSEG_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="lightseg-pg-"))
    folder.chmod(0o755)
    # the server refuses to run as root: as root, it runs as the postgres user (which the package creates)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=120)
    run([*as_user, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "lightseg"])
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"])
    try:
        yield f"postgresql://lightseg@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_study_on_postgresql(
    postgres: str, shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-3, high: 1.0e-2}")
    args = [sys.executable, "-m", "lightseg", "tune", *fit_args(shapes_root, "--trainer.max_epochs=1"),
            "--tune.space", space, "--tune.n_trials", "4", "--tune.storage", postgres,
            "--tune.pruner", "none"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [*args, "--tune.study_dir", f"worker{i}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    study = optuna.load_study(study_name="quickstart", storage=postgres.replace("://", "+psycopg://", 1))
    trials = study.get_trials()
    # every trial ran once, by one worker, in that worker's folder; both workers took trials
    assert sorted(t.number for t in trials) == list(range(len(trials))) and 4 <= len(trials) <= 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    pids = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials}
    assert pids == {str(w.pid) for w in workers}
    for trial in trials:
        folder = f"worker{[str(w.pid) for w in workers].index(trial.user_attrs['worker'].rsplit(':', 1)[1])}"
        assert Path(trial.user_attrs["run_dir"]).parts[:3] == (folder, "trials", f"trial_{trial.number:04d}")
    for out, _ in outputs:  # each worker's report holds the whole study (the other's last trial may be running)
        assert all(re.search(rf"(?m)^{t.number}\s+(complete|running)", out) for t in trials), out
    # a wrong password or host is one line, the password hidden
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", *fit_args(shapes_root), "--tune.space", space, "--tune.storage",
              "postgresql://lightseg:secret@127.0.0.1:1/postgres"])  # fmt: skip
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lightseg: error: --tune.storage postgresql://lightseg:***@127.0.0.1:1/postgres: "
                           "cannot open the study's storage: connection failed"), last  # fmt: skip


def test_a_ddp_trial_is_pruned_on_every_rank(shapes_root: Path, tmp_path: Path) -> None:
    # the random sampler's seed 0 picks 0.003, then 1e-6: trial 1 falls behind trial 0 after one epoch
    space = write_space(
        tmp_path, "model.init_args.optimizer.init_args.lr: {type: categorical, choices: [1.0e-6, 0.003]}"
    )
    # batches of 2: enough steps on each of the 2 processes for lr 1e-6 to fall behind after one epoch (batches
    # of 4 left it level with trial 0 once the quickstart trained channels-last with fused AdamW)
    args = [sys.executable, "-m", "lightseg", "tune", *fit_args(shapes_root, "--data.init_args.batch_size=2"),
            "--trainer.strategy=ddp",
            "--trainer.devices=2", "--trainer.accelerator=cpu", "--tune.space", space, "--tune.sampler", "random",
            "--tune.seed", "0", "--tune.startup_trials", "1", "--tune.n_trials", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(tmp_path / "runs" / "tune" / "quickstart").get_trials()
    lrs = [t.params["model.init_args.optimizer.init_args.lr"] for t in trials]
    assert lrs == [0.003, 1e-6] and [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    for trial in trials:
        assert trial.user_attrs["command"].count("--trainer.devices=2") == 1
        # every rank stopped after the pruning epoch: one validation in the trial's log, not two
        metrics = (Path(tmp_path, trial.user_attrs["run_dir"]) / "metrics.csv").read_text().splitlines()
        header = metrics[0].split(",")
        validations = [row for row in metrics[1:] if row.split(",")[header.index("val_miou")]]
        assert len(validations) == (2 if trial.state.name == "COMPLETE" else 1), trial.number
    # the run was a 2-process one
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr


def test_a_trial_is_not_pruned_after_its_last_epoch() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    done = study.ask()
    done.report(0.9, step=0)
    done.report(0.9, step=1)
    study.tell(done, 0.9)
    trial = study.ask()
    pruning = TrialPruning(trial, "val_miou")
    metrics = {"val_miou": torch.tensor(0.1)}
    module = SimpleNamespace(current_epoch=0)
    first = SimpleNamespace(max_epochs=2, current_epoch=0, sanity_checking=False, is_global_zero=True,
                            callback_metrics=metrics)  # fmt: skip
    with pytest.raises(optuna.TrialPruned):  # below the median after epoch 0 of 2: stopping saves an epoch
        pruning.on_validation_end(first, module)  # type: ignore[arg-type]
    trial = study.ask()
    pruning = TrialPruning(trial, "val_miou")
    module.current_epoch = 1
    pruning.on_validation_end(SimpleNamespace(**{**vars(first), "current_epoch": 1}), module)  # type: ignore[arg-type]
    study.tell(trial, 0.1)  # after the last epoch: complete, its curve reported
    last = study.trials[-1]
    assert last.state == optuna.trial.TrialState.COMPLETE and last.intermediate_values == {1: pytest.approx(0.1)}


def test_workers_racing_to_create_a_new_databases_tables_open_it_once_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy

    from lightseg.tune import storage

    class DuplicateTable(Exception):
        sqlstate = "42P07"  # what psycopg raises for the second CREATE TABLE "studies" of two workers at once

    class Syntax(Exception):
        sqlstate = "42601"

    calls: list[str] = []
    real = optuna.storages.RDBStorage

    def racing(url: str, **kwargs: object) -> object:
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.ProgrammingError("CREATE TABLE studies", None, DuplicateTable())
        return real(url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    opened = storage.open_storage(None, tmp_path / "study")
    assert isinstance(opened, real) and len(calls) == 2  # the second attempt opened what the other worker made
    calls.clear()

    def broken(url: str, **kwargs: object) -> object:
        calls.append(url)
        raise sqlalchemy.exc.ProgrammingError("SELECT", None, Syntax("syntax error at or near"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    with pytest.raises(LightsegError, match="cannot open the study's storage: syntax error"):
        storage.open_storage(None, tmp_path / "study")
    assert len(calls) == 1  # any other error is not retried
