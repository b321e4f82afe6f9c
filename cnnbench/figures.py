"""Pictures of a run: learning curves, the confusion matrix and image grids (PNG and TensorBoard)."""

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # draw to files only: no display on servers, no GUI toolkit needed

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def curves_figure(history: Sequence[dict]) -> Figure:
    """Loss and accuracy per epoch, train and validation: the plot the course notebooks draw."""
    epochs = [record["epoch"] for record in history]
    figure, (loss_axes, acc_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for axes, key in ((loss_axes, "loss"), (acc_axes, "acc")):
        axes.plot(epochs, [r[f"train_{key}"] for r in history], marker="o", label="train")
        axes.plot(epochs, [r[f"val_{key}"] for r in history], marker="o", label="validation")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("loss" if key == "loss" else "accuracy")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return figure


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> Figure:
    """Rows: true class, columns: predicted class; each row coloured by its share of the class."""
    counts = torch.tensor(confusion, dtype=torch.float64)
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=90)
    axes.set_yticks(ticks, classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(classes) <= 20:  # numbers stay readable up to about 20 classes
        for row in ticks:
            for column in ticks:
                axes.text(column, row, int(counts[row, column]), ha="center", va="center",
                          fontsize=8, color="white" if shares[row, column] > 0.5 else "black")
    figure.tight_layout()
    return figure


def image_grid(images: torch.Tensor, titles: Sequence[str], mean: Sequence[float],
               std: Sequence[float], columns: int = 8) -> Figure:
    """Normalised images shown as the eye sees them, each with a title, `columns` to a row."""
    pixels = images.float().cpu() * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    pixels = pixels.clamp(0, 1)
    rows = max(1, -(-len(images) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for index, axes in enumerate(grid.flat):
        axes.axis("off")
        if index < len(images):
            picture = pixels[index].permute(1, 2, 0).squeeze(2)
            axes.imshow(picture.numpy(), cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
            axes.set_title(titles[index], fontsize=7)
    figure.tight_layout()
    return figure


def save(figure: Figure, path) -> None:
    """Write a figure as PNG and free it (pyplot keeps every open figure otherwise)."""
    figure.savefig(path, dpi=100)
    plt.close(figure)
