"""A Hydra sweeper around Optuna's ask/tell with its journal storage (Optuna >= 4).

The maintained ``hydra-optuna-sweeper`` (1.3) still requires ``optuna<3``, whose SQLite
storage needs ``sqlalchemy<2``; this sweeper needs neither. Hydra only instantiates
sweepers that live under the ``hydra_plugins`` package, hence its place.
"""

from hydra_plugins.esper_optuna_sweeper.sweeper import OptunaSweeper

__all__ = ["OptunaSweeper"]
