"""What the leaderboard says about its rows beyond mean ± std: is a difference real, the averaged
weights, time to accuracy, and where the numbers were measured.

- The 95% confidence interval of a row's mean best accuracy over its seeds (Student's t:
  mean ± t(0.975, n-1) · s / √n), and its difference from the reference row (the best, or the
  one `cnnbench-report --baseline` names) with Welch's t-test p-value (the t distribution from
  scipy.special: scipy.stats takes 0.9 s to import, at the end of every sweep): a row at
  p ≥ 0.05 is marked ≈, indistinguishable from the reference. Fewer than 2 seeds: nothing computed.
- The best (and final) validation accuracy of the weights' moving average (ema.decay > 0).
- For each accuracy target, mean seconds and epochs to reach it over the seeds that did.
- The machines and versions the runs were measured on (metrics.json "provenance"): a line when
  they differ, so speeds are never compared across machines unknowingly.
Runs made before these were recorded lack the keys: their cells stay empty.
"""

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from cnnbench.errors import CnnbenchError
from cnnbench.leaderboard.grouping import row_labels

LEVEL = 0.05  # p-values at or above it: the difference could be chance (two-sided, 95%)
SAME, DIFFERENT, REFERENCE = "indistinguishable", "different", "reference"
ONE_SEED = "1 seed: no interval"
# What the hardware note compares (provenance keys): a speed is a property of these.
HARDWARE_KEYS = ("device_name", "cpu_cores", "torch", "cuda")


def mean(values: Iterable[float]) -> float | None:
    """The mean of `values`; None when there are none."""
    values = list(values)
    return statistics.fmean(values) if values else None


def std(values: Iterable[float]) -> float | None:
    """The sample standard deviation (n - 1) of `values`: the seeds are a sample of all the seeds one
    could run; None under two values."""
    values = list(values)
    return statistics.stdev(values) if len(values) >= 2 else None


def t_quantile(probability: float, freedom: float) -> float:
    """The `probability` quantile of Student's t distribution with `freedom` degrees of freedom."""
    from scipy.special import stdtrit  # imported here: a report of nothing should not wait

    return float(stdtrit(freedom, probability))


def t_tail(t: float, freedom: float) -> float:
    """P(T <= t) for Student's t distribution with `freedom` degrees of freedom."""
    from scipy.special import stdtr

    return float(stdtr(freedom, t))


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """The interval mean ± t(1 - (1 - level)/2, n-1) · s / √n of the mean of `values` (None under 2)."""
    if len(values) < 2:
        return None
    centre, half = statistics.fmean(values), 0.0
    spread = statistics.stdev(values)
    if spread > 0:
        half = t_quantile(1 - (1 - level) / 2, len(values) - 1) * spread / len(values) ** 0.5
    return centre - half, centre + half


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) that `a` and `b` have the same mean;
    None when either has fewer than 2 values."""
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        # t is 0/0 (scipy says nan) or ±inf: every seed gave the same number on both sides
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    # Welch: t = (mean_a - mean_b) / sqrt(va/na + vb/nb), with the Welch-Satterthwaite degrees of
    # freedom (va/na + vb/nb)^2 / ((va/na)^2/(na-1) + (vb/nb)^2/(nb-1)); two-sided p = 2 P(T <= -|t|)
    share_a, share_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / (share_a + share_b) ** 0.5
    freedom = (share_a + share_b) ** 2 / (share_a**2 / (len(a) - 1) + share_b**2 / (len(b) - 1))
    return 2 * t_tail(-abs(t), freedom)


def find_reference(rows: list[dict[str, Any]], baseline: str | None) -> int | None:
    """The index of the row the others are compared with: the one `baseline` names, else the one
    with the highest mean best accuracy (None when no row has one).

    `baseline` is words, each a model, data or override of the row (`small_cnn`, `lenet
    optimizer.lr=0.1`): a row all of whose words are named, and whose name says no more, is picked;
    else the one row whose words contain every word given (`resnet18` for the only ResNet-18 row,
    `lr=0.1`); no row or several: refused, naming the rows.
    """
    if baseline is None:
        scored = [i for i, row in enumerate(rows) if row["best_val_acc_mean"] is not None]
        return max(scored, key=lambda i: rows[i]["best_val_acc_mean"], default=None)
    words = baseline.split()
    labels = row_labels(rows)
    tokens = [{row["model"], row["data"], *row["config"].split()} for row in rows]
    exact = [i for i, label in enumerate(labels)
             if set(words) <= tokens[i] and set(label.split()) <= set(words)]
    found = exact or [i for i in range(len(rows)) if all(any(w in t for t in tokens[i]) for w in words)]
    if len(found) == 1:
        return found[0]
    named = "; ".join(labels[i] for i in (found or range(len(rows))))
    if found:
        raise CnnbenchError(f"--baseline {baseline!r} names {len(found)} rows ({named}): add words "
                            "to name one")
    raise CnnbenchError(f"--baseline {baseline!r} names no row; the rows: {named}")


# What a row is compared on: (its values over seeds, the key of their mean, the prefix of the
# columns the comparison fills). Validation: what chose each run's checkpoint and what ranks the
# rows; test: the chosen checkpoints' test accuracy, the number a paper prints.
MEASURES = {"val": ("best_values", "best_val_acc_mean", ""), "test": ("test_values", "test_acc_mean", "test_")}


def compare(rows: list[dict[str, Any]], baseline: str | None = None) -> int | None:
    """Give every row, on validation and on test, its confidence interval and its difference from
    the reference row (row mean − reference mean) with Welch's p-value; return the reference's
    index (the best row by validation, or the one `baseline` names)."""
    reference = find_reference(rows, baseline)
    for values_key, mean_key, prefix in MEASURES.values():
        ci = "best_val_acc_ci" if not prefix else "test_acc_ci"
        for index, row in enumerate(rows):
            values = row[values_key]
            row[f"{ci}_low"], row[f"{ci}_high"] = confidence_interval(values) or (None, None)
            row[f"{prefix}diff_from_reference"] = row[f"{prefix}welch_p"] = None
            row[f"{prefix}comparison"] = ""
            if index == reference:
                row[f"{prefix}comparison"] = REFERENCE
                row[f"{prefix}diff_from_reference"] = 0.0 if values else None
                continue
            if reference is None or not values:
                continue
            p = welch_p(values, rows[reference][values_key])
            if p is not None:
                row[f"{prefix}diff_from_reference"] = statistics.fmean(values) - rows[reference][mean_key]
                row[f"{prefix}welch_p"] = p
                row[f"{prefix}comparison"] = SAME if p >= LEVEL else DIFFERENT
    return reference


def interval_cell(row: dict[str, Any], measure: str = "val") -> str:
    """`0.9238–0.9794`, or why there is none."""
    ci = "best_val_acc_ci" if measure == "val" else "test_acc_ci"
    if row[f"{ci}_low"] is None:
        return ONE_SEED if len(row[MEASURES[measure][0]]) == 1 else ""
    return f"{row[f'{ci}_low']:.4f}–{row[f'{ci}_high']:.4f}"


def versus_cell(row: dict[str, Any], reference: dict[str, Any] | None, measure: str = "val") -> str:
    """`≈ −0.0184 (p 0.09)` (indistinguishable), `−0.0410 (p 0.003)`, `reference`, or why not."""
    values_key, _, prefix = MEASURES[measure]
    if row[f"{prefix}comparison"] == REFERENCE:
        return REFERENCE
    if row[f"{prefix}welch_p"] is not None:
        p = row[f"{prefix}welch_p"]
        shown = f"{p:.2g}" if p >= 0.001 else "<0.001"
        same = row[f"{prefix}comparison"] == SAME
        return f"{'≈ ' if same else ''}{row[f'{prefix}diff_from_reference']:+.4f} (p {shown})"
    if reference is None or not row[values_key]:
        return ""
    if len(row[values_key]) == 1:
        return "1 seed: no test"
    return "reference has 1 seed: no test" if reference[values_key] else "reference has no result"


def legend(rows: list[dict[str, Any]], reference: int | None, baseline: bool) -> str | None:
    """The lines under the table that say what the columns mean and what was chosen on what."""
    if not rows:
        return None
    lines = ["best val acc: the validation accuracy of each run's chosen epoch (best.pt; the rows are "
             "ranked by it); test acc: the test accuracy of that checkpoint, scored once after training."]
    if reference is not None and len(rows) >= 2:
        which = "the baseline" if baseline else "the best row"
        lines.append(f"95% CI: of the mean over seeds (Student's t). vs {which} ({row_labels(rows)[reference]}): "
                     f"difference of the means, Welch's t-test p; ≈: indistinguishable from it (p ≥ {LEVEL}).")
    marked = sorted({PROTOCOL_MARKS[row["protocol"]] for row in rows if row.get("protocol") in PROTOCOL_MARKS})
    lines += [PROTOCOL_NOTES[mark] for mark in marked]
    return "\n".join(lines)


# Rows whose runs did not choose on a validation split, marked after their model's name
PROTOCOL_MARKS = {"none": "°", "test": "†"}
PROTOCOL_NOTES = {"°": "°: trained with no validation split (data.val_split=0): nothing chosen, best.pt is "
                       "the last epoch; its best val acc is empty.",
                  "†": "†: runs of cnnbench 0.1, which chose best.pt on the test split: their best val acc is a "
                       "test accuracy, biased upward, and they have no test acc of their own."}


def ema_columns(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of the averaged weights' best and final accuracy (None without EMA)."""
    row = {}
    for name in ("best_val_acc_ema", "final_val_acc_ema"):
        values = [m[name] for m in metrics if m.get(name) is not None]
        row[f"{name}_mean"], row[f"{name}_std"] = mean(values), std(values)
    return row


def time_targets(metrics: list[dict[str, Any]]) -> list[str]:
    """The accuracy targets ("0.90") any of the runs recorded, lowest first."""
    found = {target for m in metrics if isinstance(m.get("time_to_accuracy"), dict)
             for target in m["time_to_accuracy"]}
    return sorted(found, key=float)


def time_columns(metrics: list[dict[str, Any]], targets: list[str]) -> dict[str, Any]:
    """For each target: mean seconds and epochs to reach it over the seeds that did, how many did,
    and of how many that recorded it."""
    row: dict[str, Any] = {}
    for target in targets:
        recorded = [m["time_to_accuracy"][target] for m in metrics
                    if isinstance(m.get("time_to_accuracy"), dict) and target in m["time_to_accuracy"]]
        reached = [r for r in recorded if r]
        for name, key in (("s", "seconds"), ("epochs", "epoch")):
            row[f"time_to_{target}_{name}_mean"] = mean(r[key] for r in reached)
        row[f"time_to_{target}_reached"] = len(reached) if recorded else None
        row[f"time_to_{target}_recorded"] = len(recorded)
    return row


def time_cell(row: dict[str, Any], target: str) -> str:
    """`12.3 s / 2.0 ep (3/3)`: mean seconds and epochs over the seeds that reached it (of all)."""
    reached, recorded = row[f"time_to_{target}_reached"], row[f"time_to_{target}_recorded"]
    if not recorded:
        return ""
    if not reached:
        return f"not reached (0/{recorded})"
    return (f"{row[f'time_to_{target}_s_mean']:,.1f} s / {row[f'time_to_{target}_epochs_mean']:.1f} ep "
            f"({reached}/{recorded})")


def hardware(provenance: dict[str, Any] | None) -> str | None:
    """`AMD EPYC 7B13 (2 cores), torch 2.6.0`, with `, CUDA 12.4` on a GPU; None when not recorded."""
    if not isinstance(provenance, dict):
        return None
    text = f"{provenance.get('device_name') or '?'} ({provenance.get('cpu_cores') or '?'} cores), " \
           f"torch {provenance.get('torch') or '?'}"
    return text + (f", CUDA {provenance['cuda']}" if provenance.get("cuda") else "")


def hardware_note(metrics: list[dict[str, Any]]) -> str | None:
    """One line when the runs were measured on different hardware or versions (or some did not
    record theirs), naming what differs; None when they agree."""
    recorded = [m["provenance"] for m in metrics if isinstance(m.get("provenance"), dict)]
    if not recorded:
        return None  # all made before provenance was recorded: nothing to compare
    differs = []
    for key in HARDWARE_KEYS:
        seen = Counter(str(p.get(key)) if p.get(key) is not None else "none" for p in recorded)
        if len(seen) > 1:
            counts = ", ".join(f"{value} ({count} runs)" for value, count in sorted(seen.items()))
            differs.append(f"{key} {counts}")
    unknown = len(metrics) - len(recorded)
    if unknown:
        differs.append(f"not recorded by {unknown} runs (made before provenance was)")
    if not differs:
        return None
    return ("measured on different hardware or versions: " + "; ".join(differs)
            + ": compare speeds only between rows measured alike (csv column hardware)")
