"""Files from others are data: what keeps a checkpoint, a run folder or a sweep folder from naming
code for cnnbench to run.

A config is only a file, and Hydra's `instantiate` calls whatever `_target_` names, nested ones
included; Hydra's group options even load YAML files by relative path (`model=../../x`). So a
config read from a file someone else made (a checkpoint's, a run folder's `config.json`, its
saved `.hydra/overrides.yaml`) is held to what cnnbench itself writes there: a model from the
registry with plain option values, plain keys set to plain values, group options that exist.
What the user types, and config folders they pass with `--config-dir`, stay trusted: those are
the user's own code.
"""

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from cnnbench.errors import CnnbenchError

# The keys by which Hydra's instantiate calls code (and changes how it calls it).
SPECIAL_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
# The only places a config cnnbench writes has a _target_: the model's builder, and the optimizer
# and scheduler classes (with _partial_). Only the model's is ever called for a stored config.
TARGET_SECTIONS = ("model", "optimizer", "scheduler")
# Resolvers the project's own configs use in values a run may save (${steps:30} in a schedule);
# OmegaConf's oc.decode and oc.create turn a string into config nodes, so they are not allowed.
SAFE_RESOLVERS = {"steps", "decay_steps", "threads_per_job"}
_RESOLVER = re.compile(r"\$\{\s*([^:}\s]+)\s*:")

PLAIN = (str, int, float, bool, type(None))


def check_plain(value: Any, key: str, source: str) -> None:
    """Refuse anything in `value` but numbers, strings, booleans, None and lists or dicts of
    them without Hydra's special keys and without interpolations (a stored config is resolved)."""
    if isinstance(value, Mapping):
        for name, item in value.items():
            if name in SPECIAL_KEYS:
                raise CnnbenchError(f"{source}: {key}.{name} is refused: a stored config may not name code "
                                    "to call; only load checkpoints and run folders you trust")
            check_plain(item, f"{key}.{name}", source)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{key}[{index}]", source)
    elif not isinstance(value, PLAIN):
        raise CnnbenchError(f"{source}: {key} holds a {type(value).__name__}, not plain data")
    elif isinstance(value, str) and "${" in value:
        raise CnnbenchError(f"{source}: {key}={value!r} is refused: cnnbench stores configs resolved, "
                            "so an interpolation there was put in by hand")


def check_stored_config(config: Any, source: str) -> None:
    """A checkpoint's or run folder's config, as cnnbench could have written it, or CnnbenchError."""
    if not isinstance(config, Mapping):
        raise CnnbenchError(f"{source}: its config is not a mapping of keys to values")
    for key, value in config.items():
        if key in TARGET_SECTIONS and isinstance(value, Mapping):
            for name, item in value.items():
                target_slot = name in ("_target_", "_partial_")
                if target_slot and not isinstance(item, str | bool):
                    raise CnnbenchError(f"{source}: {key}.{name} must be a name, not {item!r}")
                if not target_slot:
                    check_plain(item, f"{key}.{name}", source)
        else:
            check_plain(value, str(key), source)


def project_groups() -> dict[str, set[str]]:
    """Each config group of the project's own conf/ and its options (YAML file stems)."""
    conf = resources.files("cnnbench.conf")
    return {group.name: {option.name.removesuffix(".yaml") for option in group.iterdir()
                         if option.name.endswith(".yaml")}
            for group in conf.iterdir() if group.is_dir() and not group.name.startswith("_")}


def check_saved_overrides(saved: list[str], source: str, config_dirs: Sequence[Path] = ()) -> list[str]:
    """The overrides a run folder saved, if each only sets a plain value of an existing key or
    picks an existing option of a config group; CnnbenchError naming the first that does more.

    `config_dirs`: the user's own config folders (--config-dir), whose options count as existing.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, groups = OverridesParser.create(), project_groups()
    for text in saved:
        def refuse(why: str) -> CnnbenchError:
            return CnnbenchError(f"{source}: the saved override {text!r} is refused: {why}; a run folder's "
                                 "overrides are data, not code: if you trust it, type it on the command line")
        try:
            override = parser.parse_override(text)
        except HydraException:
            raise refuse("it does not parse") from None
        key = override.key_or_group
        if override.is_add() or override.is_force_add() or override.is_delete():
            raise refuse("it adds or deletes a key, which a run of the project's own configs never saves")
        if override.package is not None or "/" in key or key.split(".")[0] == "hydra":
            raise refuse("it changes where configs go or how Hydra runs")
        if any(part in SPECIAL_KEYS for part in key.split(".")):
            raise refuse("it names code to call")
        value = override.value()
        if key in groups:
            options = set(groups[key]) | {path.stem for folder in config_dirs
                                          for path in (Path(folder) / key).glob("*.yaml")}
            # one option, or a list of them ('logger=[csv,mlflow]')
            for option in value if isinstance(value, list) else [value]:
                if option is not None and (not isinstance(option, str) or option not in options):
                    raise refuse(f"{key} has no option {option!r}")
            continue
        _check_override_value(value, refuse)
    return saved


def _check_override_value(value: Any, refuse) -> None:
    if isinstance(value, Mapping):
        raise refuse("it sets a config node, not a value")
    if isinstance(value, list):
        for item in value:
            _check_override_value(item, refuse)
    elif isinstance(value, str):
        unsafe = sorted(set(_RESOLVER.findall(value)) - SAFE_RESOLVERS)
        if unsafe:
            raise refuse(f"it calls the resolver {unsafe[0]}")
