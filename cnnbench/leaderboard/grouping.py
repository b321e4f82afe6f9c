"""What makes runs one configuration of the leaderboard, and how a row names it: the config that
trained, without the seed and the keys that say where or how a run ran (config/keys.py)."""

import json
from typing import Any

from cnnbench.config.keys import RUNTIME_KEYS, flatten, model_name, override_key
from cnnbench.sweep.folders import RunInfo


def _ignored(data_name: Any) -> set[str]:
    # the seed too: runs that differ only by it are the one configuration's replicates
    ignored = {"seed", *RUNTIME_KEYS}
    return ignored - {"data.root"} if data_name == "imagefolder" else ignored


def group_key(run: RunInfo) -> str:
    """What makes runs one configuration: their config without the seed and the runtime keys.

    The config, not the command line: `model=lenet` typed or left to the default, a run made
    last week or today, it is the same configuration when the config that trained is the same.
    A run that failed before writing its config falls back to its overrides.
    """
    if run.config is not None:
        flat = flatten(run.config)
        ignored = _ignored(flat.get("data.name"))
        return json.dumps({k: v for k, v in flat.items() if k not in ignored}, sort_keys=True, default=str)
    data = next((o.split("=", 1)[1] for o in run.overrides if override_key(o) == "data"), None)
    return json.dumps(sorted(o for o in run.overrides if override_key(o) not in _ignored(data)))


def describe(run: RunInfo) -> tuple[str, str, str]:
    """(model, data, the other overrides) as the leaderboard shows a run's configuration."""
    flat = flatten(run.config or {})
    model = run.choices.get("model") or run.metrics.get("model") or model_name((run.config or {}).get("model") or {})
    data = run.choices.get("data") or run.metrics.get("data") or str(flat.get("data.name", "?"))
    ignored = _ignored(data) | {"model", "data"}
    config = " ".join(sorted(o for o in run.overrides if override_key(o) not in ignored))
    return model, data, config


def common_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """The overrides every row shares (said once, above a table or a picture, not on every row);
    none for a single row."""
    configs = [set(row["config"].split()) for row in rows]
    return sorted(set.intersection(*configs)) if len(configs) > 1 else []


def row_labels(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's name as a user types it and a figure's legend shows it: the model, the data when
    the rows differ in it, and the overrides not every row shares."""
    common = set(common_overrides(rows))
    several_data = len({row["data"] for row in rows}) > 1
    return [" ".join([row["model"]] + ([row["data"]] if several_data else [])
                     + [o for o in row["config"].split() if o not in common]) for row in rows]
