"""``lightseg tune``: the command line, its help (without importing torch) and its exit statuses."""

from __future__ import annotations

import os
import shlex
import sys

from lightseg.tune.settings import split_arguments, usage


def tune_main(args: list[str]) -> None:
    """``lightseg tune ...``: exits 0 (done), 2 (a usage error) or 130 (Ctrl-C; run it again to continue)."""
    if any(a in ("-h", "--help") for a in args):
        print(usage())
        raise SystemExit(0)
    from lightseg.cli.app import find_user_error, user_message
    from lightseg.errors import LightsegError

    try:
        settings, fit_args = split_arguments(args)
        _check_installed()
        from lightseg.tune.results import report
        from lightseg.tune.study import TRIAL_ENV, Study, restore_interrupt

        study = Study(settings, fit_args)
        trial_id = os.environ.get(TRIAL_ENV)
        if trial_id is not None:  # a DDP process of a trial, started by Lightning with this command line
            study.run_other_rank(int(trial_id))
            return
        launched = max(int(os.environ.get(v) or 1) for v in ("WORLD_SIZE", "SLURM_NTASKS"))
        if launched > 1 and not settings.report:
            raise LightsegError(
                "lightseg tune starts each trial's processes itself (--trainer.devices N, --trainer.num_nodes): "
                "run it as one process, not under torchrun or srun; several machines share a study through "
                "--tune.storage"
            )
        command = shlex.join(["lightseg", "tune", *args])
        if settings.report:
            print(report(study.open(create=False), study.folder))
            return
        try:
            optuna_study = study.run()
        except KeyboardInterrupt:
            restore_interrupt()
            print(f"lightseg: the study stopped (Ctrl-C); to continue it:\n  {command}", file=sys.stderr)
            print(report(study.open(create=False), study.folder))
            raise SystemExit(130) from None
        print(report(optuna_study, study.folder))
    except Exception as err:
        user_error = find_user_error(err)
        if user_error is None:
            raise
        print(f"lightseg: error: {user_message(user_error)}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_installed() -> None:
    from lightseg.errors import LightsegError

    try:
        import optuna  # noqa: F401
        import optuna_integration  # noqa: F401
    except ImportError as err:
        raise LightsegError(
            f'lightseg tune needs {err.name}, which is not installed: pip install "lightseg[tune]" '
            '(or -c constraints.txt -e ".[tune]" in a checkout)'
        ) from None


__all__ = ["tune_main"]
