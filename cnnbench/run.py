"""The `cnnbench` command: Hydra composes the config, `train` does the work."""

import sys
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnbench.config import check_config
from cnnbench.errors import CnnbenchError


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _run(cfg: DictConfig) -> float:
    try:
        check_config(cfg)
        # Imported only now: torch and torchvision take seconds to load, and a bad value or
        # --help should answer at once.
        from cnnbench.train import train

        metrics = train(cfg, HydraConfig.get().runtime.output_dir)
    except CnnbenchError as error:
        print(f"cnnbench: error: {error}", file=sys.stderr)
        sys.exit(2)
    return metrics["best_val_acc"]  # what a sweeper (e.g. Optuna) maximises


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_arguments(arguments: list[str]) -> list[str]:
    """`resume=RUN_FOLDER`: continue that run in place, with the overrides it was started with.

    Hydra would otherwise give the resumed run a new folder and the default config; here the
    run's own `.hydra/overrides.yaml` comes first, then whatever this command line changes.
    """
    value = next((a.split("=", 1)[1] for a in arguments if _key(a) == "resume"), None)
    chosen_folder = any(_key(a) == "hydra.run.dir" for a in arguments)
    if value in (None, "true", "false", "True", "False") or chosen_folder:
        return arguments
    folder = Path(value) if Path(value).is_dir() else Path(value).parent
    saved_file = folder / ".hydra" / "overrides.yaml"
    saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else []
    given = {_key(a) for a in arguments}
    kept = [a for a in saved or [] if _key(a) not in given | {"resume", "hydra.run.dir"}]
    return kept + arguments + [f"hydra.run.dir={folder}"]


def main() -> None:
    """Console entry point."""
    sys.argv = [sys.argv[0], *resume_arguments(sys.argv[1:])]
    _run()


if __name__ == "__main__":
    main()
