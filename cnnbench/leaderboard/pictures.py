"""Pictures of a sweep, written beside its leaderboard (by every sweep's end and by cnnbench-report):

- leaderboard_curves.png: validation accuracy and loss against epoch, one colour per configuration:
  the mean over its seeds, and a band of ±1 standard deviation (a bar when there is one epoch);
- leaderboard_cost.png: the best validation accuracy (mean, bar ±1 std) against three costs:
  parameters, multiply-accumulates per image and training images/s (log scales), one point per
  configuration; the Pareto front (the configurations no other one beats on both accuracy and
  that cost) joined by a black line and ringed.

Each configuration is named as `cnnbench-report --baseline` takes it (model, and the overrides not
every row shares), the shared ones above the plots: the picture reads without the table.
"""

import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from cnnbench.engine.figures import (
    BLACK,
    FONT_SIZE,
    GREY,
    WHITE,
    Colour,
    font,
    legend_image,
    line_panel,
    palette,
    scatter_panel,
    stack,
    wrap_text,
    write_png,
)
from cnnbench.leaderboard.grouping import common_overrides, row_labels
from cnnbench.leaderboard.statistics import mean, std

CURVES, COST = "leaderboard_curves.png", "leaderboard_cost.png"
WRITER = "cnnbench-report"  # the tool the pictures name as theirs (a sweep's end draws them too)
WIDTH = 1000  # about a page's width in a browser or an editor's preview; text stays 16 px
# (row key, axis label, whether more is better): the costs accuracy is drawn against
COSTS = [("parameters", "parameters", False), ("macs", "MACs per image", False),
         ("images_per_sec", "training images/s (more is faster)", True)]


def write_sweep_figures(folder: Path, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Draw the rows' pictures into `folder` (each replaced whole); {file name: what it shows} of
    those written: none when no row has a finished epoch."""
    labels = row_labels(rows) if rows else []
    shown = [(row, label) for row, label in zip(rows, labels, strict=True)
             if row["best_val_acc_mean"] is not None]
    if not shown:
        return {}
    colours = palette(len(shown))
    entries = [(f"{label} ({row['seeds']} seed{'s' if row['seeds'] != 1 else ''})", colour)
               for (row, label), colour in zip(shown, colours, strict=True)]
    context = _context(rows)
    written = {}
    curves = curves_figure([row for row, _ in shown], colours, entries, context)
    if curves:
        write_png(folder / CURVES, curves, WRITER)
        written[CURVES] = "validation accuracy and loss against epoch, mean ± 1 std over seeds"
    write_png(folder / COST, cost_figure([row for row, _ in shown], colours, entries, context), WRITER)
    written[COST] = "best validation accuracy against parameters, MACs and images/s, with the Pareto front"
    return written


def _context(rows: list[dict[str, Any]]) -> str:
    # what every configuration shares: said once, above the plots
    data = {row["data"] for row in rows}
    common = common_overrides(rows)
    parts = ([f"data: {data.pop()}"] if len(data) == 1 else []) + (
        [f"every configuration: {' '.join(common)}"] if common else [])
    return "; ".join(parts)


def seed_curves(metrics: list[dict[str, Any]], key: str, epochs: list[int]
                ) -> tuple[list[float | None], list[float | None], list[float | None]]:
    """Per epoch, over the seeds that have it: the mean of `key` (val_acc, val_loss), and mean − std
    and mean + std where two seeds or more have it (None elsewhere)."""
    per_epoch: dict[int, list[float]] = {}
    for m in metrics:
        for record in m.get("history") or []:
            value = record.get(key)
            if value is not None and math.isfinite(value):
                per_epoch.setdefault(record["epoch"], []).append(value)
    means, low, high = [], [], []
    for epoch in epochs:
        values = per_epoch.get(epoch, [])
        centre, spread = mean(values), std(values)
        means.append(centre)
        low.append(None if spread is None else centre - spread)
        high.append(None if spread is None else centre + spread)
    return means, low, high


def curves_figure(rows: list[dict[str, Any]], colours: list[Colour], entries: list[tuple[str, Colour]],
                  context: str) -> Image.Image | None:
    """Validation accuracy and loss per epoch, each configuration's mean over seeds with a ±1 std
    band; None when no run has a history."""
    last = max((record["epoch"] for row in rows for m in row["metrics"] for record in m.get("history") or []),
               default=0)
    if not last:
        return None
    epochs = list(range(1, last + 1))
    panels = []
    for key, name in (("val_acc", "validation accuracy"), ("val_loss", "validation loss")):
        series, bands = [], []
        for row, colour in zip(rows, colours, strict=True):
            mean, low, high = seed_curves(row["metrics"], key, epochs)
            series.append(("", mean, colour))
            bands.append((low, high))
        # one epoch alone: widen the axis, so that its points and bars stand clear of the frame
        panels.append(line_panel((WIDTH // 2, 380), name, epochs, series, bands, legend=False,
                                 x_range=(0, 2) if last == 1 else None))
    title = "Validation accuracy and loss per epoch: mean over seeds, band ±1 std"
    return _figure(title, context, stack(panels, across=True), entries)


def pareto_front(points: list[tuple[float, float]], more_is_better: bool = False) -> list[int]:
    """The indices of the (cost, accuracy) points no other point beats: one at least as accurate and
    at least as cheap (as fast, `more_is_better`), and better in one of the two."""
    sign = -1 if more_is_better else 1

    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return sign * a[0] <= sign * b[0] and a[1] >= b[1] and (sign * a[0] < sign * b[0] or a[1] > b[1])

    return [i for i, p in enumerate(points) if not any(beats(q, p) for j, q in enumerate(points) if j != i)]


def cost_figure(rows: list[dict[str, Any]], colours: list[Colour], entries: list[tuple[str, Colour]],
                context: str) -> Image.Image:
    """Best validation accuracy against each of COSTS, one point per configuration, Pareto front marked."""
    panels = []
    for index, (key, label, more_is_better) in enumerate(COSTS):
        points = [(row[key], row["best_val_acc_mean"], row["best_val_acc_std"], colour)
                  for row, colour in zip(rows, colours, strict=True) if row.get(key)]
        front = pareto_front([(x, y) for x, y, _, _ in points], more_is_better)
        width = WIDTH - 2 * (WIDTH // 3) if index == 0 else WIDTH // 3
        panels.append(scatter_panel((width, 380), "best val acc", label, points, front))
    title = ("Best validation accuracy against cost (mean, bar ±1 std over seeds); black line: the Pareto "
             "front, where no other configuration is both better and cheaper")
    return _figure(title, context, stack(panels, across=True), entries + [("Pareto front", BLACK)])


def _figure(title: str, context: str, plots: Image.Image, entries: list[tuple[str, Colour]]) -> Image.Image:
    # the title and what every configuration shares above the plots, the legend below them
    typeface, step = font(), FONT_SIZE + 6
    lines = [(line, BLACK) for line in wrap_text(title, WIDTH - 20, typeface)]
    lines += [(line, GREY) for line in wrap_text(context, WIDTH - 20, typeface)]
    header = Image.new("RGB", (WIDTH, 10 + len(lines) * step), WHITE)
    draw = ImageDraw.Draw(header)
    for number, (line, colour) in enumerate(lines):
        draw.text((10, 6 + number * step), line, font=typeface, fill=colour)
    return stack([header, plots, legend_image(WIDTH, entries)])
