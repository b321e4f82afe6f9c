"""The `cnnbench` command: Hydra composes the config, `train` does the work."""

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnnbench import sweep
from cnnbench.config import check_config, override_key
from cnnbench.errors import CnnbenchError


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _run(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # A sweep job: skipped, resumed or trained as its folder says; a failure is reported
        # and the sweep goes on (Hydra would stop at the first exception).
        return sweep.run_job(cfg, run_dir, _train)
    try:
        metrics = _train(cfg, run_dir)
    except CnnbenchError as error:
        print(f"cnnbench: error: {error}", file=sys.stderr)
        sys.exit(2)
    return metrics["best_val_acc"]  # what a sweeper (e.g. Optuna) maximises


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    check_config(cfg)
    # Imported only now: torch and torchvision take seconds to load, and a bad value or
    # --help should answer at once.
    from cnnbench.train import train

    return train(cfg, run_dir)


def resume_arguments(arguments: list[str]) -> list[str]:
    """`resume=RUN_FOLDER`: continue that run in place, with the overrides it was started with.

    Hydra would otherwise give the resumed run a new folder and the default config; here the
    run's own `.hydra/overrides.yaml` comes first, then whatever this command line changes.
    """
    value = next((a.split("=", 1)[1] for a in arguments if override_key(a) == "resume"), None)
    chosen_folder = any(override_key(a) == "hydra.run.dir" for a in arguments)
    if value in (None, "true", "false", "True", "False") or chosen_folder:
        return arguments
    folder = Path(value) if Path(value).is_dir() else Path(value).parent
    saved_file = folder / ".hydra" / "overrides.yaml"
    saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else []
    given = {override_key(a) for a in arguments}
    kept = [a for a in saved or [] if override_key(a) not in given | {"resume", "hydra.run.dir"}]
    return kept + arguments + [f"hydra.run.dir={folder}"]


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


def main() -> None:
    """Console entry point."""
    missing = missing_plugin(sys.argv[1:])
    if missing:
        # Hydra alone would say only that the option does not exist.
        print(f"cnnbench: error: {missing} needs a Hydra plugin: pip install 'cnnbench[sweep]'",
              file=sys.stderr)
        sys.exit(2)
    arguments = quote_folders(resume_arguments(sys.argv[1:]))
    sys.argv = [sys.argv[0], *torchrun_arguments(arguments, dict(os.environ))]
    _run()
    if sweep.failed_jobs():  # each was reported when it failed; the exit status says so too
        sys.exit(1)


if __name__ == "__main__":
    main()
