"""A run folder as a run leaves it: the files of its own that it writes, and the rule that a new
run never writes over an earlier one. Read without importing torch (the command checks it before
Hydra starts)."""

from pathlib import Path

from cnnbench.errors import CnnbenchError

# The files a run writes in its folder (each written whole: files.write_whole).
CHECKPOINTS = ("last.pt", "best.pt")
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
PICTURES = ("curves.png", "confusion_matrix.png")
RUN_FILES = (*CHECKPOINTS, METRICS_FILE, CONFIG_FILE, *PICTURES)
# What Hydra writes in a run folder before the run starts, with a plain open() (through a link):
# the composed config, its overrides, and the console log (hydra.job.name is "run").
HYDRA_FILES = (".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "run.log")


def refuse_existing_run(run_dir: Path) -> None:
    """A new run must not write over an earlier one: refuse a folder that already holds last.pt."""
    if (run_dir / "last.pt").exists():
        raise CnnbenchError(f"{run_dir} already holds a run (last.pt); continue it with resume=true "
                            f"(or resume={run_dir}), or choose another hydra.run.dir")
