"""A run folder as a run leaves it: the files of its own that it writes, the rule that a new run
never writes over an earlier one, and the checkpoint a resume continues from. Read without
importing torch (the command checks these before Hydra starts)."""

from pathlib import Path

from cnnbench.errors import CnnbenchError
from cnnbench.loggers import LOGGER_FILES

# The files a run writes in its folder (each written whole: files.write_whole), and its loggers'
# (metrics.csv, trackers.json, W&B's folder wandb/).
CHECKPOINTS = ("last.pt", "best.pt")
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
PICTURES = ("curves.png", "confusion_matrix.png")
RUN_FILES = (*CHECKPOINTS, METRICS_FILE, CONFIG_FILE, SPLIT_FILE, *PICTURES, *LOGGER_FILES)
# What Hydra writes in a run folder (the console log: hydra.job.name is "run"), with a plain
# open() (through a link), and what cnnbench writes for it once a run is accepted: the composed
# config and its overrides.
HYDRA_FILES = (".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "run.log")


def refuse_existing_run(run_dir: Path) -> None:
    """A new run must not write over an earlier one: refuse a folder that already holds last.pt."""
    if (run_dir / "last.pt").exists():
        raise CnnbenchError(f"{run_dir} already holds a run (last.pt); continue it with resume=true "
                            f"(or resume={run_dir}), or choose another hydra.run.dir")


def find_resume_checkpoint(resume: bool | str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuse to overwrite an earlier run."""
    if resume is False or resume is None:
        refuse_existing_run(run_dir)
        return None
    path = run_dir if resume is True else Path(str(resume))
    path = path / "last.pt" if path.is_dir() or resume is True else path
    if not path.is_file():
        shown = "true" if resume is True else resume
        raise CnnbenchError(f"resume={shown}: {path} does not exist; give a run folder that holds "
                            "last.pt, or a checkpoint file")
    return path
