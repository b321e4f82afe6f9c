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


# A token in a row's config cell: the run was resumed with other values of some keys (metrics.json
# "resumes" says which), so it trained neither as the first config nor as the last one says.
CHANGED_ON_RESUME = "(changed-on-resume)"


def fingerprint(run: RunInfo) -> str | None:
    """The image tree's fingerprint a run recorded (metrics.json data_identity), if any."""
    identity = run.metrics.get("data_identity")
    return identity.get("fingerprint") if isinstance(identity, dict) else None


def resume_changes(run: RunInfo) -> list[dict[str, Any]]:
    """The keys each resume of the run changed, but for those that only say where or how it ran."""
    changes = []
    for resume in run.metrics.get("resumes") or []:
        changed = resume.get("changed") if isinstance(resume, dict) else None
        kept = {key: value for key, value in (changed or {}).items() if key.split(".")[0] not in _RUNTIME_ROOTS
                and key not in RUNTIME_KEYS}
        if kept:
            changes.append(kept)
    return changes


_RUNTIME_ROOTS = {key for key in RUNTIME_KEYS if "." not in key}


def group_key(run: RunInfo) -> str:
    """What makes runs one configuration: their config without the seed and the runtime keys, the
    images of an image folder (their fingerprint), and what a resume changed.

    The config, not the command line: `model=lenet` typed or left to the default, a run made
    last week or today, it is the same configuration when the config that trained is the same.
    A run that failed before writing its config falls back to its overrides.
    """
    if run.config is not None:
        flat = flatten(run.config)
        ignored = _ignored(flat.get("data.name"))
        key = {k: v for k, v in flat.items() if k not in ignored}
        if fingerprint(run):
            key["data fingerprint"] = fingerprint(run)
        if resume_changes(run):
            key["changed on resume"] = resume_changes(run)
        return json.dumps(key, sort_keys=True, default=str)
    data = next((o.split("=", 1)[1] for o in run.overrides if override_key(o) == "data"), None)
    return json.dumps(sorted(o for o in run.overrides if override_key(o) not in _ignored(data)))


def describe(run: RunInfo) -> tuple[str, str, str]:
    """(model, data, the other overrides) as the leaderboard shows a run's configuration."""
    flat = flatten(run.config or {})
    model = run.choices.get("model") or run.metrics.get("model") or model_name((run.config or {}).get("model") or {})
    data = run.choices.get("data") or run.metrics.get("data") or str(flat.get("data.name", "?"))
    ignored = _ignored(data) | {"model", "data"}
    tokens = sorted(o for o in run.overrides if override_key(o) not in ignored)
    if fingerprint(run):
        tokens.append(f"data.fingerprint={fingerprint(run)[:8]}")
    if resume_changes(run):
        tokens.append(CHANGED_ON_RESUME)
    return model, data, " ".join(tokens)


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
