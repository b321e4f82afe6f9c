"""The `cnnbench` command: Hydra composes the config, `train` does the work."""

import contextlib
import difflib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cnnbench import sweep
from cnnbench.claim import claim, refuse_if_claimed
from cnnbench.cli import console_command
from cnnbench.config import check_config, override_key, refuse_existing_run
from cnnbench.errors import CnnbenchError, Interrupted
from cnnbench.untrusted import check_saved_overrides


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _run(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # A sweep job: skipped, resumed or trained as its folder says; a failure is reported
        # and the sweep goes on (Hydra would stop at the first exception).
        journal = sweep.journal_entry(hydra_cfg.sweep.dir, hydra_cfg.job.num)
        return sweep.run_job(cfg, run_dir, _train, journal)
    try:
        # The run's folder is this process's while it trains (under torchrun, rank 0 holds it for all).
        with claim(run_dir) if distributed_rank() == 0 else contextlib.nullcontext() as stale:
            if stale:
                print(f"cnnbench: taking over {run_dir}: {stale.gone()}", file=sys.stderr, flush=True)
            metrics = _train(cfg, run_dir)
    except CnnbenchError as error:
        fail(str(error))
    return metrics["best_val_acc"]  # what a sweeper (e.g. Optuna) maximises


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    check_config(cfg)
    # Imported only now: torch and torchvision take seconds to load, and a bad value or
    # --help should answer at once.
    from cnnbench import distributed
    from cnnbench.train import train

    try:
        return train(cfg, run_dir)
    finally:  # under torchrun, a failed run leaves the process group too (NCCL would hold the GPU)
        distributed.stop()


def resume_arguments(arguments: list[str]) -> list[str]:
    """`resume=RUN_FOLDER` (or `resume=true hydra.run.dir=RUN_FOLDER`): continue that run in place,
    with the overrides it was started with.

    Hydra would otherwise give the resumed run a new folder and the default config; here the
    run's own `.hydra/overrides.yaml` comes first, then whatever this command line changes.
    """
    value = next((a.split("=", 1)[1] for a in arguments if override_key(a) == "resume"), None)
    chosen = [a.split("=", 1)[1].strip("'\"") for a in arguments if override_key(a) == "hydra.run.dir"]
    if value in ("true", "True") and chosen:  # resume=true hydra.run.dir=FOLDER: the same, spelt out
        folder, extra = Path(chosen[-1]), []
    elif value in (None, "true", "false", "True", "False") or chosen:
        return arguments
    else:
        folder = Path(value) if Path(value).is_dir() else Path(value).parent
        extra = [f"hydra.run.dir={folder}"]
    saved_file = folder / ".hydra" / "overrides.yaml"
    try:
        saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CnnbenchError(f"cannot read {saved_file}: {str(error).splitlines()[0]}") from None
    if not isinstance(saved or [], list) or not all(isinstance(a, str) for a in saved or []):
        raise CnnbenchError(f"{saved_file} is not a list of key=value overrides")
    given = {override_key(a) for a in arguments}
    kept = [a for a in saved or [] if override_key(a) not in given | {"resume", "hydra.run.dir"}]
    # The folder may be someone else's: what it saved is data, what this command line says is the
    # user's own (a saved override the checks refuse can be typed here instead).
    check_saved_overrides(kept, str(saved_file), config_dirs(arguments))
    return kept + arguments + extra


def config_dirs(arguments: list[str]) -> list[Path]:
    """The folders given with --config-dir DIR (or -cd DIR, --config-dir=DIR): the user's own configs."""
    folders = []
    for index, argument in enumerate(arguments):
        if argument in ("--config-dir", "-cd") and index + 1 < len(arguments):
            folders.append(Path(arguments[index + 1]))
        elif argument.startswith("--config-dir="):
            folders.append(Path(argument.split("=", 1)[1]))
    return folders


# Keys whose values are folders. A sweep's run folders have '=' in their names (..._seed=0),
# which Hydra's override grammar accepts only inside quotes: quote them so a user need not.
_FOLDER_KEYS = ("resume", "hydra.run.dir", "hydra.sweep.dir")


def quote_folders(arguments: list[str]) -> list[str]:
    """`resume=runs/lenet_fake_seed=0` -> `resume='runs/lenet_fake_seed=0'`, which Hydra can parse."""
    quoted = []
    for argument in arguments:
        key, _, value = argument.partition("=")
        unquoted = value[:1] not in "'\"" and "'" not in value
        if override_key(argument) in _FOLDER_KEYS and "=" in value and unquoted:
            argument = f"{key}='{value}'"
        quoted.append(argument)
    return quoted


# Presets that need a Hydra plugin (the `sweep` extra), and the module each plugin installs.
PLUGINS = {
    "launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
    "launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hparams_search=optuna": "hydra_plugins.hydra_optuna_sweeper",
}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_plugin(arguments: list[str], installed: Callable[[str], bool] = _installed) -> str | None:
    """The first argument that selects a preset whose Hydra plugin is not installed, if any."""
    return next((a for a in arguments if a.lstrip("+") in PLUGINS and not installed(PLUGINS[a.lstrip("+")])),
                None)


def torchrun_arguments(arguments: list[str], environment: dict[str, str]) -> list[str]:
    """Under torchrun, every process must use one run folder, which Hydra would name after the
    second each process starts in: name it after torchrun's run id instead, shared by all."""
    if int(environment.get("WORLD_SIZE", "1")) <= 1:
        return arguments
    extra = []
    if not any(override_key(a) in ("hydra.run.dir", "resume") for a in arguments):
        run_id = environment.get("TORCHELASTIC_RUN_ID", "ddp")[:8]
        extra.append("hydra.run.dir=outputs/${now:%Y-%m-%d}/ddp-" + run_id
                     + "_${hydra:runtime.choices.model}_${hydra:runtime.choices.data}")
    if environment.get("RANK", "0") != "0":
        extra.append("hydra.output_subdir=null")  # rank 0 alone writes .hydra/
    return arguments + extra


def hydra_error_line(error: Exception, arguments: list[str]) -> str:
    """One line for what Hydra or OmegaConf refused (they say it in several), with the fix."""
    cause = error.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and "not in struct" in str(cause):
        # a typo such as optimizer.learning_rate=0.1: name the keys that do exist there
        parent = cause.full_key.rpartition(".")[0]
        keys = [str(key) for key in (cause.parent_node or {}) if not str(key).startswith("_")]
        close = difflib.get_close_matches(str(cause.key), keys, n=1) or [
            key for key in keys if initials(key) == str(cause.key) or key == initials(str(cause.key))]
        guess = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
        return (f"{cause.full_key} is not a config key ({guess}keys in {parent or 'the config'}: "
                f"{', '.join(keys)}); to add a key the config lacks, write +{cause.full_key}=VALUE")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0].removeprefix("In 'config': ") if lines else type(error).__name__
    if isinstance(error, OverrideParseException):  # Hydra does not say which argument
        parser = OverridesParser.create()
        for argument in arguments:
            try:
                parser.parse_override(argument)
            except HydraException:
                return f"cannot parse {argument} ({first}); {' '.join(lines[1:])}"
    if len(lines) > 1 and lines[1].startswith("Available options"):  # a group option that does not exist
        return f"{first}; choose one of: {', '.join(lines[2:])}"
    return "; ".join([first, *lines[1:]])


def initials(key: str) -> str:
    """learning_rate -> lr, weight_decay -> wd: how keys get shortened."""
    return "".join(word[:1] for word in key.split("_"))


@console_command
def main() -> None:
    """Console entry point."""
    missing = missing_plugin(sys.argv[1:])
    if missing:
        # Hydra alone would say only that the option does not exist.
        fail(f"{missing} needs a Hydra plugin: pip install 'cnnbench[sweep]'")
    try:
        arguments = quote_folders(resume_arguments(sys.argv[1:]))
    except CnnbenchError as error:
        fail(str(error))
    folders = [a.split("=", 1)[1].strip("'\"") for a in arguments if override_key(a) == "hydra.run.dir"]
    resuming = any(override_key(a) == "resume" and not a.endswith("=false") for a in arguments)
    if folders and distributed_rank() == 0:
        try:
            # before Hydra starts: it would write over the folder's .hydra/ (and its overrides)
            refuse_if_claimed(Path(folders[-1]))  # a run live in another process
            if not resuming:
                refuse_existing_run(Path(folders[-1]))
        except CnnbenchError as error:
            fail(str(error))
    sys.argv = [sys.argv[0], *torchrun_arguments(arguments, dict(os.environ))]
    traceback_asked = "HYDRA_FULL_ERROR" in os.environ
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors, to be said here in one line
    try:
        _run()
    except Interrupted as stop:
        multirun = any(a in ("-m", "--multirun") for a in sys.argv)
        hint = ("Rerun the same command to continue the sweep (finished runs are skipped, this one resumes)"
                if multirun else f"Continue with: cnnbench resume={stop.run_dir}")
        if distributed_rank() == 0:
            print(f"cnnbench: {stop}. {hint}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        print("\ncnnbench: stopped at once; last.pt holds the last saved progress", file=sys.stderr)
        sys.exit(130)
    except (HydraException, OmegaConfBaseException) as error:
        if traceback_asked:
            raise
        fail(hydra_error_line(error, sys.argv[1:]))
    except (OSError, ValueError) as error:
        # Hydra cannot create the run folder or its log file there (read-only, disk full); the
        # logging module wraps its OSError in a ValueError
        cause = os_error(error)
        if traceback_asked or cause is None or isinstance(cause, BrokenPipeError):
            raise  # a closed pipe: console_command ends the command
        fail(f"cannot write {cause.filename or 'a file'}: {cause.strerror or cause}; run where you "
             "can write, or choose another folder with hydra.run.dir=DIR")
    if sweep.failed_jobs():  # each was reported when it failed; the exit status says so too
        sys.exit(1)


def os_error(error: BaseException | None) -> OSError | None:
    """The OSError that `error` is, or was raised while handling, if any."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def fail(message: str) -> NoReturn:
    """Say what is wrong in one line and exit with status 2 (bad input), as argparse does."""
    print(f"cnnbench: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def distributed_rank() -> int:
    """This process's rank under torchrun (0 otherwise), read without importing torch."""
    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    main()
