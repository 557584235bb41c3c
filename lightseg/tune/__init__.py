"""``lightseg tune``: hyperparameter search over any config value with Optuna.

Each trial is an ordinary ``lightseg fit`` run in the study folder; the study lives in an
Optuna storage (a SQLite file by default, PostgreSQL for workers on several machines), so a
stopped study continues where it stopped. See docs/tune.md.

The modules import Optuna and torch; :mod:`lightseg.tune.settings` (the options and the
help) does not.
"""

from lightseg.tune.settings import TuneSettings, split_arguments
from lightseg.tune.space import Parameter, SearchSpace

__all__ = ["Parameter", "SearchSpace", "TuneSettings", "split_arguments"]
