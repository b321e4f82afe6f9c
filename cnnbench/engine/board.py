"""What a run shows in TensorBoard, and the PNG pictures it leaves in its folder."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from cnnbench.engine.figures import (
    confusion_image,
    curves_image,
    feature_maps_image,
    filters_image,
    gradient_flow_image,
    image_grid,
    to_pixels,
    write_png,
)
from cnnbench.engine.validation import per_class_accuracy
from cnnbench.insight.features import first_convolution, stage_outputs, strongest_channels

SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc")


class Board:
    """TensorBoard events of one run (scalars, images, hparams) plus curves.png and confusion_matrix.png.

    A disabled board (distributed training, ranks other than 0) writes nothing.
    """

    def __init__(self, run_dir: Path, classes: Sequence[str], mean: Sequence[float],
                 std: Sequence[float], enabled: bool = True) -> None:
        self.run_dir, self.classes, self.mean, self.std = run_dir, list(classes), list(mean), list(std)
        self.enabled = enabled
        self.writer = SummaryWriter(log_dir=str(run_dir)) if enabled else None
        self.gradient_norms: dict[str, float] = {}  # the last measured (gradients), drawn at each epoch's end
        self.fixed_image: torch.Tensor | None = None  # the validation image whose feature maps are shown

    def training_batch(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One augmented training batch as the model sees it: checks augmentation at a glance."""
        if not self.enabled:
            return
        count = min(32, len(images))
        captions = [[self.classes[i]] for i in labels[:count].tolist()]
        self._image("train/augmented_batch", image_grid(images[:count], captions, self.mean, self.std))

    def training_steps(self, update: int, loss: float, acc: float, lr: float) -> None:
        """The training loss and accuracy of the batches since the last point, and the learning
        rate, at optimizer step `update` of the run (every log_every steps): the curves between
        epochs (TensorBoard's "step" section; the epoch scalars keep the epoch as their x-axis)."""
        if not self.enabled:
            return
        self.writer.add_scalar("step/train_loss", loss, update)
        self.writer.add_scalar("step/train_acc", acc, update)
        self.writer.add_scalar("step/lr", lr, update)

    def gradients(self, update: int, measured: dict[str, dict[str, float]]) -> None:
        """Per-layer gradient norms and activation statistics (insight/gradients.py) at optimizer
        step `update`: one chart per layer in the sections gradient_norm/, activation_mean/,
        activation_std/, activation_dead/ (ReLUs) and activation_saturated/ (sigmoid, tanh)."""
        if not self.enabled:
            return
        for statistic, values in measured.items():
            section = statistic if statistic == "gradient_norm" else f"activation_{statistic}"
            for layer, value in values.items():
                self.writer.add_scalar(f"{section}/{layer}", value, update)
        self.gradient_norms = measured["gradient_norm"]

    def network(self, model: torch.nn.Module, epoch: int, images) -> None:
        """What the convolutions learned by epoch `epoch`: the first convolution's filters, and the
        feature maps of one fixed validation image (the first of `images`, a batch stream) at the
        end of each stage (insight/features.py)."""
        if not self.enabled:
            return
        first = first_convolution(model)
        if first is None:  # a model without convolutions (the MLP)
            return
        self._image("network/filters", filters_image(*first), epoch)
        if self.fixed_image is None and images is not None:
            self.fixed_image = next(iter(images))[0][:1].clone()  # fixed: validation is neither shuffled nor augmented
        if self.fixed_image is None:  # no validation split: the filters alone
            return
        device = first[1].device
        image = self.fixed_image.to(device, memory_format=torch.contiguous_format)[0]
        stages = [(name, maps, strongest_channels(maps, 8)) for name, maps in stage_outputs(model, image)]
        picture = to_pixels(self.fixed_image, self.mean, self.std)[0]
        self._image("network/feature_maps", feature_maps_image(picture, stages), epoch)

    def epoch(self, record: dict[str, float], confusion: list[list[int]]) -> None:
        """Scalars of one epoch, per-class validation accuracy, and the confusion matrix image."""
        if not self.enabled:
            return
        step = record["epoch"]
        for key in SCALARS:
            if record[key] is not None:  # no validation split: train scalars only
                self.writer.add_scalar(key.replace("_", "/", 1), record[key], step)
        if record.get("val_acc_ema") is not None:  # the averaged weights (ema.decay > 0)
            self.writer.add_scalar("val_ema/loss", record["val_loss_ema"], step)
            self.writer.add_scalar("val_ema/acc", record["val_acc_ema"], step)
        self.writer.add_scalar("lr", record["lr"], step)
        if "lr_pretrained" in record:  # fine-tuning: the pretrained part's rate beside the head's
            self.writer.add_scalar("lr_pretrained", record["lr_pretrained"], step)
        self.writer.add_scalar("perf/images_per_sec", record["images_per_sec"], step)
        self.writer.add_scalar("perf/epoch_time_s", record["epoch_time_s"], step)
        if self.gradient_norms:  # the epoch's last measured gradients, from the input's layer to the output's
            self._image("gradient_flow", gradient_flow_image(self.gradient_norms), step)
        if confusion:
            for name, accuracy in per_class_accuracy(confusion, self.classes).items():
                self.writer.add_scalar(f"val_class_acc/{name}", accuracy, step)
            self._image("val/confusion_matrix", confusion_image(confusion, self.classes, percent=True), step)
        self.writer.flush()

    def finish(self, history: list[dict[str, Any]], confusion: list[list[int]],
               mistakes: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, hparams: dict[str, Any],
               metrics: dict[str, float], test: dict[str, Any] | None = None) -> None:
        """The end of a run: misclassified images (validation's, or with no validation split the
        test's), the test scores of best.pt, hparams with final metrics, and the PNG files."""
        if not self.enabled:
            return
        images, true, predicted = mistakes if mistakes is not None else ([], None, None)
        if len(images):
            pairs = zip(true.tolist(), predicted.tolist(), strict=True)
            captions = [[self.classes[t], f"-> {self.classes[p]}"] for t, p in pairs]  # true, then predicted
            split = "val" if history and history[-1].get("val_acc") is not None else "test"
            self._image(f"{split}/misclassified", image_grid(images, captions, self.mean, self.std))
        if test is not None:  # scored once: at the last epoch's step
            step = history[-1]["epoch"] if history else 0
            self.writer.add_scalar("test/acc", test["best"]["acc"], step)
            self.writer.add_scalar("test/loss", test["best"]["loss"], step)
            for name, accuracy in per_class_accuracy(test["best"]["confusion"], self.classes).items():
                self.writer.add_scalar(f"test_class_acc/{name}", accuracy, step)
        # run_name=".": the hparams land beside this run's scalars, not in a new sub-folder
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.close()
        # written whole: never through a link someone left at either name
        if history:
            write_png(self.run_dir / "curves.png", curves_image(history))
        if confusion:
            write_png(self.run_dir / "confusion_matrix.png", confusion_image(confusion, self.classes))

    def _image(self, tag: str, image: Image.Image, step: int = 0) -> None:
        self.writer.add_image(tag, np.asarray(image), step, dataformats="HWC")
