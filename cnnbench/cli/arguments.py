"""The `cnnbench` command line before Hydra reads it, each override read by Hydra's own parser:
folder values quoted, `resume=RUN` turned into that run's own overrides, the plugin a preset
needs, and one run folder for all of torchrun's processes."""

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from cnnbench.config.keys import override_key
from cnnbench.config.trust import check_saved_overrides
from cnnbench.errors import CnnbenchError

# Hydra's flags that take a value (`--config-dir DIR`, or `--config-dir=DIR`); --info's is optional.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
# Keys whose values are folders. A sweep's run folders have '=' in their names (..._seed=0),
# which Hydra's override grammar accepts only inside quotes: they are quoted so a user need not.
FOLDER_KEYS = ("resume", "hydra.run.dir", "hydra.sweep.dir")
_PARSER = OverridesParser.create()


@dataclass
class CommandLine:
    """The command's arguments: Hydra's flags (with their values) and the overrides, each as the
    text Hydra will read and as Hydra's parser reads it."""

    flags: list[str]
    overrides: list[tuple[str, Override]]

    @classmethod
    def read(cls, arguments: list[str]) -> "CommandLine":
        """Split `arguments` into flags and overrides; an override Hydra cannot parse is an error
        naming it (a folder value with `=` in it is quoted first)."""
        flags, overrides = [], []
        arguments = list(arguments)
        while arguments:
            argument = arguments.pop(0)
            if argument.startswith("-"):
                flags.append(argument)
                takes_value = argument in _VALUE_FLAGS or (argument in ("--info", "-i") and arguments
                                                           and arguments[0] in _INFO_CHOICES)
                if takes_value and arguments:
                    flags.append(arguments.pop(0))
            else:
                overrides.append(parsed(argument))
        return cls(flags, overrides)

    def arguments(self) -> list[str]:
        """The command line as Hydra is to read it."""
        return self.flags + [text for text, _ in self.overrides]

    def value(self, key: str, default: Any = None) -> Any:
        """The value the last override of `key` sets (Hydra's reading: true is True), or `default`."""
        values = [override.value() for _, override in self.overrides
                  if override.key_or_group == key and not override.is_delete()]
        return values[-1] if values else default

    def keys(self) -> set[str]:
        return {override.key_or_group for _, override in self.overrides}

    def with_overrides(self, first: list[str] = (), last: list[str] = ()) -> "CommandLine":
        """This command line with overrides put before and after its own (later ones win)."""
        return CommandLine(self.flags, [parsed(text) for text in first] + self.overrides
                           + [parsed(text) for text in last])

    def config_dirs(self) -> list[Path]:
        """The folders given with --config-dir DIR (or -cd DIR, --config-dir=DIR): the user's own configs."""
        folders = []
        for index, flag in enumerate(self.flags):
            if flag in ("--config-dir", "-cd") and index + 1 < len(self.flags):
                folders.append(Path(self.flags[index + 1]))
            elif flag.startswith("--config-dir="):
                folders.append(Path(flag.split("=", 1)[1]))
        return folders

    def multirun(self) -> bool:
        return any(flag in ("-m", "--multirun") for flag in self.flags)


def parsed(text: str) -> tuple[str, Override]:
    """An override as Hydra reads it; a folder value with `=` in it (a sweep's run folder) is
    quoted first, `resume=runs/lenet_fake_seed=0` -> `resume='runs/lenet_fake_seed=0'`."""
    try:
        return text, _PARSER.parse_override(text)
    except HydraException as error:
        key, _, value = text.partition("=")
        if key.lstrip("+") in FOLDER_KEYS and "'" not in value:
            quoted = f"{key}='{value}'"
            try:
                return quoted, _PARSER.parse_override(quoted)
            except HydraException:
                pass
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        raise CnnbenchError(f"cannot parse {text} ({lines[0]}); "
                            "see https://hydra.cc/docs/advanced/override_grammar/basic for the syntax") from None


def resume_arguments(line: CommandLine) -> CommandLine:
    """`resume=RUN_FOLDER` (or `resume=true hydra.run.dir=RUN_FOLDER`): continue that run in place,
    with the overrides it was started with.

    Hydra would otherwise give the resumed run a new folder and the default config; here the
    run's own `.hydra/overrides.yaml` comes first, then whatever this command line changes.
    """
    value, chosen = line.value("resume"), line.value("hydra.run.dir")
    if value is True and chosen is not None:  # resume=true hydra.run.dir=FOLDER: the same, spelt out
        folder, extra = Path(str(chosen)), []
    elif value in (None, True, False) or chosen is not None:
        return line
    else:
        folder = Path(str(value)) if Path(str(value)).is_dir() else Path(str(value)).parent
        extra = [f"hydra.run.dir={folder}"]
    saved_file = folder / ".hydra" / "overrides.yaml"
    try:
        saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CnnbenchError(f"cannot read {saved_file}: {str(error).splitlines()[0]}") from None
    if not isinstance(saved or [], list) or not all(isinstance(a, str) for a in saved or []):
        raise CnnbenchError(f"{saved_file} is not a list of key=value overrides")
    given = line.keys() | {"resume", "hydra.run.dir"}
    kept = [text for text in saved or [] if override_key(text) not in given]
    # The folder may be someone else's: what it saved is data, what this command line says is the
    # user's own (a saved override the checks refuse can be typed here instead).
    check_saved_overrides(kept, str(saved_file), line.config_dirs())
    return line.with_overrides(first=kept, last=extra)


# Presets that need a Hydra plugin (the `sweep` extra), and the module each plugin installs.
PLUGINS = {
    ("launcher", "joblib"): "hydra_plugins.hydra_joblib_launcher",
    ("launcher", "slurm"): "hydra_plugins.hydra_submitit_launcher",
    ("hparams_search", "optuna"): "hydra_plugins.hydra_optuna_sweeper",
}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_plugin(line: CommandLine, installed: Callable[[str], bool] = _installed) -> str | None:
    """The first override that selects a preset whose Hydra plugin is not installed, if any."""
    for text, override in line.overrides:
        value = None if override.is_sweep_override() else override.value()
        module = PLUGINS.get((override.key_or_group, value)) if isinstance(value, str) else None
        if module and not installed(module):
            return text.lstrip("+")
    return None


def torchrun_arguments(line: CommandLine, environment: dict[str, str]) -> CommandLine:
    """Under torchrun, every process must use one run folder, which Hydra would name after the
    second each process starts in: name it after torchrun's run id instead, shared by all (rank 0
    alone writes its .hydra/: cli/train.py)."""
    if int(environment.get("WORLD_SIZE", "1")) <= 1:
        return line
    extra = []
    if not line.keys() & {"hydra.run.dir", "resume"}:
        run_id = environment.get("TORCHELASTIC_RUN_ID", "ddp")[:8]
        extra.append("hydra.run.dir=outputs/${now:%Y-%m-%d}/ddp-" + run_id
                     + "_${hydra:runtime.choices.model}_${hydra:runtime.choices.data}")
    return line.with_overrides(last=extra)
