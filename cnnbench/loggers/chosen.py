"""The loggers a run's config chooses (`cfg.logger`: csv, mlflow, wandb), started, fed and closed as
one.

A logger that fails (a tracking server gone, a full disk under its store, a value its library
refuses) is reported once, in one warning line, and left out for the rest of the run: the run goes
on, and TensorBoard and metrics.json, which engine/train.py writes itself, stay whole. A logger whose
package is not installed is another matter: a choice that cannot work, refused in one line naming
the extra before the run starts. Each logger's module, and the library it needs, is imported only
when a run chooses it: a run without them starts as fast as before.
"""

import importlib
import importlib.util
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cnnbench.errors import CnnbenchError, Interrupted
from cnnbench.files import read_plain, write_text_whole
from cnnbench.loggers.logged import IDS_FILE, LoggedRun, Logger

log = logging.getLogger("cnnbench")

# Each logger's module (conf/logger/<name>.yaml chooses it) ...
MODULES = {"csv": "cnnbench.loggers.csv_file", "mlflow": "cnnbench.loggers.mlflow_run",
           "wandb": "cnnbench.loggers.wandb_run"}
# ... and the package it needs, which `pip install 'cnnbench[<name>]'` installs (csv: the standard library)
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}

Result = TypeVar("Result")


def check_loggers(options: Mapping[str, Any] | None) -> None:
    """Refuse, in one line, a logger cnnbench does not have, or one whose package is not installed;
    nothing is imported (find_spec only looks)."""
    if options is not None and not isinstance(options, Mapping):
        raise CnnbenchError(f"logger={options!r} is not a choice of loggers: write logger=csv or "
                            "'logger=[csv,mlflow,wandb]'")
    for name in options or {}:
        if name not in MODULES:
            raise CnnbenchError(f"logger: cnnbench has no logger {name!r}; choose from {', '.join(MODULES)}, "
                                "e.g. 'logger=[csv,mlflow]'")
        if name in PACKAGES and importlib.util.find_spec(PACKAGES[name]) is None:
            raise CnnbenchError(f"logger={name} needs the {PACKAGES[name]} package, which is not installed: "
                                f"pip install 'cnnbench[{name}]'")


class Loggers:
    """The run's chosen loggers as one. Used as a context manager around the run: a run that fails
    or is stopped closes their tracker runs as failed or stopped."""

    def __init__(self) -> None:
        self.active: dict[str, Logger] = {}

    @classmethod
    def start(cls, config: dict[str, Any], folder: Path, history: list[dict[str, Any]], tags: dict[str, str],
              sweep: str | None = None, resumed: bool = False) -> "Loggers":
        """Start the loggers `config["logger"]` chooses for the run in `folder` (`config`: resolved,
        as config.json holds it). `resumed`: continue the tracker runs whose ids the folder kept."""
        loggers = cls()
        saved = read_ids(folder) if resumed else {}
        for name, options in (config.get("logger") or {}).items():
            run = LoggedRun(folder, config, dict(options or {}), list(history), tags, sweep, saved.get(name, {}))
            # imported here: only a run that chooses a logger pays for its import
            logger = loggers._guarded(name, "start", lambda: importlib.import_module(MODULES[name]).start(run))
            if logger is not None:
                loggers.active[name] = logger
        ids = {**saved, **{name: logger.ids for name, logger in loggers.active.items() if logger.ids}}
        if ids or (folder / IDS_FILE).exists():  # (a fresh run forgets the tracker runs of an earlier try)
            try:
                write_text_whole(folder / IDS_FILE, json.dumps({"tool": "cnnbench", **ids}, indent=2))
            except CnnbenchError as error:  # only a later resume needs it: it would start new tracker runs
                log.warning("%s; a resume of this run will start new tracker runs", error)
        return loggers

    def epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Epoch `record["epoch"]` is done (`history`: every epoch so far)."""
        for name, logger in list(self.active.items()):
            self._guarded(name, f"epoch {record['epoch']}", lambda: logger.epoch(record, history))

    def finish(self, metrics: dict[str, Any], files: list[Path]) -> None:
        """The run has finished: its final numbers (metrics.json's) and files; every tracker run is closed."""
        for name, logger in list(self.active.items()):
            self._guarded(name, "the end of the run", lambda: logger.finish(metrics, files))
        self.active.clear()

    def __enter__(self) -> "Loggers":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        # a stop signal or Ctrl-C: a run to be resumed, not a failed one
        failed = not isinstance(error, Interrupted | KeyboardInterrupt)
        for name, logger in list(self.active.items()) if error is not None else []:
            self._guarded(name, "closing", lambda: logger.close(failed))
        self.active.clear()

    def _guarded(self, name: str, when: str, call: Callable[[], Result]) -> Result | None:
        # A logger's failure is its own: said once, and that logger is left out from then on. (Its
        # tracker run is not closed: with the server gone, that would wait for its retries again.)
        try:
            return call()
        except Exception as error:
            self.active.pop(name, None)
            lines = str(error).strip().splitlines() or [type(error).__name__]
            log.warning("logger %s failed at %s and is off for the rest of this run, which goes on (TensorBoard "
                        "and metrics.json are whole): %s: %s", name, when, type(error).__name__, lines[0])
            return None


def read_ids(folder: Path) -> dict[str, dict[str, Any]]:
    """The tracker runs' ids the run folder kept ({"mlflow": {"run_id": ...}, "wandb": {"id": ...}});
    {} when it has none, or a damaged file (said in a warning: the loggers then start new runs)."""
    path = folder / IDS_FILE
    if not path.exists():
        return {}
    try:
        saved = json.loads(read_plain(path))
    except (OSError, ValueError) as error:
        log.warning("%s cannot be read (%s): the loggers start new tracker runs", path, error)
        return {}
    if not isinstance(saved, dict):
        log.warning("%s holds no tracker ids: the loggers start new tracker runs", path)
        return {}
    return {name: ids for name, ids in saved.items() if name in MODULES and isinstance(ids, dict)}
