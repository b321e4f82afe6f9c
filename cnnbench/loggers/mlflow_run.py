"""logger=mlflow: one MLflow run per cnnbench run, written through MLflow's client
(`pip install 'cnnbench[mlflow]'` installs mlflow-skinny: the client and its file store, without
MLflow's server and UI).

Params: the resolved config, flattened (`optimizer.lr`). Metrics: every number of each epoch's
record, at step = the epoch, under metrics.json's names; at the end metrics.json's final and test
numbers. Tags: what produced the run (model, data, seed, versions, device, host, command, git
commit), its folder, and `sweep` (the sweep folder's name) in a sweep. Artifacts: best.pt (unless
logger.mlflow.log_checkpoint=false), the pictures and metrics.json. The run's id is kept in the run
folder (trackers.json), so that a resume goes on logging into the same MLflow run.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from cnnbench.config.keys import flatten
from cnnbench.loggers.logged import LoggedRun, numbers

# MLflow refuses longer values (6,000 characters a param, 8,000 a tag): they are cut instead
LONGEST_VALUE = 5000
PARAMS_PER_CALL = 100  # what one log_batch takes at most
# metrics.json's numbers that are not results (its per-epoch series are logged each epoch already)
NOT_RESULTS = ("seed", "epochs")


def tracking_uri(given: str | None) -> str:
    """Where the runs go: logger.mlflow.tracking_uri, else MLflow's own MLFLOW_TRACKING_URI, else the
    file store `mlruns` in the folder cnnbench was started in (made absolute: every run of a sweep
    finds the same store)."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    if "://" not in uri and not uri.startswith("file:"):
        uri = Path(uri).expanduser().absolute().as_uri()
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store "in maintenance mode" and refuses it unless this is set. It
        # needs no server and no database: MLflow's default now, SQLite, needs SQLAlchemy and Alembic
        # (not in mlflow-skinny) and cost about 2.5 s more per run here. A user's own setting wins.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


class MlflowLogger:
    """One MLflow run, logged to by its id."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str, log_checkpoint: bool) -> None:
        self.client, self.run_id, self.log_checkpoint = client, run_id, log_checkpoint
        self.ids = {"run_id": run_id, "tracking_uri": uri}
        self.series: set[str] = set()  # the per-epoch metrics' names

    def epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        values = numbers(record, leave_out=("epoch",))
        self.series |= values.keys()
        self._log(values, step=record["epoch"])

    def finish(self, metrics: dict[str, Any], files: list[Path]) -> None:
        # (images_per_sec, the mean over the epochs, would land in the per-epoch series of that name)
        series = self.series | {key for record in metrics["history"] for key in record}
        self._log(numbers(metrics, leave_out=(*NOT_RESULTS, *series)), step=metrics["epochs_done"])
        for path in files:
            if path.suffix != ".pt" or self.log_checkpoint:
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self, failed: bool) -> None:
        # KILLED: stopped by a signal, to be resumed (resume=RUN goes on in this MLflow run)
        self.client.set_terminated(self.run_id, "FAILED" if failed else "KILLED")

    def _log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)  # MLflow's timestamps are milliseconds
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])


def start(run: LoggedRun) -> MlflowLogger:
    """The MLflow run of `run`: the one its folder kept when it is in this tracking store (a
    resume), else a new one, which gets the epochs done so far at once."""
    uri = tracking_uri(run.options.get("tracking_uri"))
    client = MlflowClient(tracking_uri=uri)
    run_id = run.saved.get("run_id") if run.saved.get("tracking_uri") == uri else None
    if isinstance(run_id, str) and exists(client, run_id):
        client.update_run(run_id, status="RUNNING")
        logged = client.get_run(run_id).data.params
        new = False
    else:
        experiment = experiment_id(client, str(run.options.get("experiment_name") or "cnnbench"))
        tags = {**run.tags, **({"sweep": run.sweep} if run.sweep else {})}
        run_id = client.create_run(experiment, run_name=str(run.options.get("run_name") or run.folder.name),
                                   tags={key: shown(value) for key, value in tags.items()}).info.run_id
        logged, new = {}, True
    # a param cannot change once logged (MLflow refuses it): a resume adds only the keys the run lacked
    params = [Param(key, shown(value)) for key, value in flatten(run.config).items() if key not in logged]
    for first in range(0, len(params), PARAMS_PER_CALL):
        client.log_batch(run_id, params=params[first:first + PARAMS_PER_CALL])
    logger = MlflowLogger(client, run_id, uri, bool(run.options.get("log_checkpoint", True)))
    for record in run.history if new else []:  # a resumed run that chooses MLflow only now
        logger.epoch(record, run.history)
    return logger


def exists(client: MlflowClient, run_id: str) -> bool:
    """Whether the store holds this run, not deleted."""
    try:
        return client.get_run(run_id).info.lifecycle_stage != "deleted"
    except MlflowException:
        return False


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment of that name, created when it is not there yet."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another job of the sweep created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def shown(value: Any) -> str:
    """A config value or tag as MLflow stores it, text: 0.1, true, null, [0.5, 0.5], lenet."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:LONGEST_VALUE]
