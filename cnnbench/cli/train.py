"""The `cnnbench` command: Hydra composes the config, `train` does the work."""

import contextlib
import difflib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cnnbench.cli.arguments import CommandLine, missing_plugin, resume_arguments, torchrun_arguments
from cnnbench.cli.common import console_command, fail, hydra_command_line, lossless_log_files, os_error
from cnnbench.config.checks import check_config
from cnnbench.config.keys import model_name
from cnnbench.engine.run_folder import find_resume_checkpoint, refuse_existing_run
from cnnbench.errors import CnnbenchError, Interrupted, SweepFailed
from cnnbench.files import refuse_links, write_text_whole
from cnnbench.sweep import jobs, journal
from cnnbench.sweep.claims import claim, refuse_if_claimed
from cnnbench.sweep.folders import RUN_FOLDER_FILES


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _run(cfg: DictConfig) -> float | None:
    lossless_log_files()  # Hydra has just opened this job's run.log
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # A sweep job: skipped, resumed or trained as its folder says; a failure is reported
        # and the sweep goes on (Hydra would stop at the first exception).
        entry = journal.journal_entry(hydra_cfg.sweep.dir, hydra_cfg.job.num)
        return jobs.run_job(cfg, run_dir, _train, entry)
    try:
        # The run's folder is this process's while it trains (under torchrun, rank 0 holds it for all).
        with claim(run_dir) if distributed_rank() == 0 else contextlib.nullcontext() as ours:
            if ours and ours.stale:
                print(f"cnnbench: taking over {run_dir}: {ours.stale.gone()}", file=sys.stderr, flush=True)
            metrics = _train(cfg, run_dir, check_claim=ours.check if ours else None)
    except CnnbenchError as error:
        fail(str(error))
    return metrics["best_val_acc"]  # what a sweeper (e.g. Optuna) maximises


def _train(cfg: DictConfig, run_dir: Path, resume: bool | str | None = None,
           check_claim: Callable[[], None] | None = None) -> dict[str, Any]:
    record = hydra_record(cfg, run_dir)
    try:
        check_config(cfg)
        # Imported only now: torch and torchvision take seconds to load, and a bad value or
        # --help should answer at once.
        from cnnbench.engine.train import train

        # a sweep's runs are grouped by its folder's name in the trackers (W&B's group, MLflow's tag)
        hydra_cfg = HydraConfig.get()
        sweep = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
        return train(cfg, run_dir, resume, accepted=record, check_claim=check_claim, sweep=sweep)
    except Exception:
        if HydraConfig.get().mode == RunMode.MULTIRUN and not (run_dir / ".hydra").exists():
            record()  # a new sweep job that failed: its folder still says what it was (the leaderboard reads it)
        raise
    finally:  # under torchrun, a failed run leaves the process group too (NCCL would hold the GPU)
        leave_process_group()


def leave_process_group() -> None:
    """Under torchrun, leave the process group (nothing when torch.distributed was never started)."""
    if "torch" in sys.modules:
        from cnnbench.runtime import distributed

        distributed.stop()


def hydra_record(cfg: DictConfig, run_dir: Path) -> Callable[[], None]:
    """What writes the run folder's .hydra/ as Hydra would (the composed config, Hydra's own, the
    command line's overrides), each file whole; called once the run is accepted, so that a refused
    resume or a skipped sweep job changes nothing there. Rank 0 alone writes under torchrun."""
    hydra_cfg = HydraConfig.get()

    def write() -> None:
        if distributed_rank() != 0:
            return
        folder = run_dir / ".hydra"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_whole(folder / "config.yaml", OmegaConf.to_yaml(cfg))
        write_text_whole(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
        write_text_whole(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))
    return write


def hydra_error_line(error: Exception, arguments: list[str]) -> str:
    """One line for what Hydra or OmegaConf refused (they say it in several), with the fix."""
    cause = error.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and "not in struct" in str(cause) \
            and cause.full_key == "model.weights":  # a model with no pretrained weights: say which have them
        from cnnbench.models.torchvision_weights import weights_refusal  # imports torch: on this error only

        return weights_refusal(model_name(cause.parent_node or {}))
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
    try:
        line = CommandLine.read(sys.argv[1:])
        missing = missing_plugin(line)
        if missing:  # Hydra alone would say only that the option does not exist
            raise CnnbenchError(f"{missing} needs a Hydra plugin: pip install 'cnnbench[sweep]'")
        line = resume_arguments(line)
        folder, resume = line.value("hydra.run.dir"), line.value("resume", False)
        if folder is not None and distributed_rank() == 0:
            # before Hydra starts, which creates the folder and its run.log (through any link
            # planted there)
            refuse_links(Path(str(folder)), RUN_FOLDER_FILES)
            refuse_if_claimed(Path(str(folder)))  # a run live in another process
            if resume is False:
                refuse_existing_run(Path(str(folder)))
            else:  # a folder that is not a run is not made into one
                find_resume_checkpoint(resume, Path(str(folder)))
        arguments = torchrun_arguments(line, dict(os.environ)).arguments()
    except CnnbenchError as error:
        fail(str(error))
    traceback_asked = "HYDRA_FULL_ERROR" in os.environ
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors, to be said here in one line
    try:
        with hydra_command_line(arguments):
            _run()
    except SweepFailed:  # each failure was reported, and counted in the sweep's summary
        sys.exit(1)
    except Interrupted as stop:
        hint = ("Rerun the same command to continue the sweep (finished runs are skipped, this one resumes)"
                if stop.in_sweep else f"Continue with: cnnbench resume={stop.run_dir}")
        if distributed_rank() == 0:
            print(f"cnnbench: {stop}. {hint}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        print("\ncnnbench: stopped at once; last.pt holds the last saved progress", file=sys.stderr)
        sys.exit(130)
    except (HydraException, OmegaConfBaseException) as error:
        if traceback_asked:
            raise
        fail(hydra_error_line(error, arguments))
    except (OSError, ValueError) as error:
        # Hydra cannot create the run folder or its log file there (read-only, disk full); the
        # logging module wraps its OSError in a ValueError
        cause = os_error(error)
        if traceback_asked or cause is None or isinstance(cause, BrokenPipeError):
            raise  # a closed pipe: console_command ends the command
        fail(f"cannot write {cause.filename or 'a file'}: {cause.strerror or cause}; run where you "
             "can write, or choose another folder with hydra.run.dir=DIR")


def distributed_rank() -> int:
    """This process's rank under torchrun (0 otherwise), read without importing torch."""
    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    main()
