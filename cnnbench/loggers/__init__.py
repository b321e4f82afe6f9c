"""Where a run reports besides TensorBoard (engine/board.py, always on): the `logger` config group,
several at once (`logger=[csv,mlflow,wandb]`). chosen.py starts, feeds and closes the chosen ones as
one, so that a logger that fails never stops the run; csv_file.py, mlflow_run.py and wandb_run.py are
the loggers, each imported only when a run chooses it (MLflow and W&B take a second or more to import).
"""

from cnnbench.loggers.chosen import Loggers, check_loggers
from cnnbench.loggers.logged import LOGGER_FILES

__all__ = ["LOGGER_FILES", "Loggers", "check_loggers"]
