"""Where a study lives: its Optuna storage (SQLite, PostgreSQL, a journal file) and the study in it."""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Any, Literal, cast

import optuna
import sqlalchemy

from lightseg.errors import LightsegError, option
from lightseg.tune.settings import TuneSettings

#: a worker whose trial has sent no heartbeat for this long is taken for dead; its trial fails
HEARTBEAT_S, GRACE_S = 30, 120


def open_storage(url: str | None, study_dir: Path) -> Any:
    """The Optuna storage at ``url`` (default: ``<study_dir>/study.db``), with one line where it cannot be used."""
    if url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{study_dir / 'study.db'}"
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    shown = _without_password(url)
    if url.startswith(("postgresql://", "postgres://")):  # SQLAlchemy's default driver is psycopg2: use psycopg 3
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat
                    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
                # workers starting together on a new database race to create its tables: one does, the others
                # meet a duplicate key (IntegrityError) or a table / index that is already there (PostgreSQL's
                # 42P07 duplicate_table, 42710 duplicate_object) and open it once it is made
                racing = isinstance(err, sqlalchemy.exc.IntegrityError) or getattr(err.orig, "sqlstate", None) in {
                    "42P07",
                    "42710",
                }
                if not racing or attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
        raise AssertionError("unreachable")
    except ModuleNotFoundError as err:
        raise LightsegError(
            f'{option("tune", "storage")} {shown} needs the {err.name} package: pip install "lightseg[tune]"'
        ) from None
    except Exception as err:  # SQLAlchemy's errors: a wrong host, password or database
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise LightsegError(f"{option('tune', 'storage')} {shown}: cannot open the study's storage: {reason}") from None


def _without_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def open_study(settings: TuneSettings, name: str, storage: Any, metric: str, direction: str) -> optuna.Study:
    """Create the study, or load it to continue; the same study name cannot change its metric or direction."""
    if settings.pruner == "median":
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_epochs
        )
    elif settings.pruner == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    else:
        pruner = optuna.pruners.NopPruner()
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.RandomSampler(seed=settings.seed)
        if settings.sampler == "random"
        else optuna.samplers.TPESampler(seed=settings.seed)
    )
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        known = study.user_attrs.get("metric")
        if known != metric or study.direction.name.lower() != direction:
            raise LightsegError(
                f"study {name!r} optimises {known} ({study.direction.name.lower()}), not {metric} ({direction}): "
                f"give a new {option('tune', 'study_name')}, or the same metric and direction to continue it"
            )
        return study
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=cast(Literal["minimize", "maximize"], direction),
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    study.set_user_attr("metric", metric)
    return study
