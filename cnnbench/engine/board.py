"""What a run shows in TensorBoard, and the PNG pictures it leaves in its folder."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from cnnbench.engine.figures import confusion_image, curves_image, image_grid, write_png
from cnnbench.engine.validation import per_class_accuracy

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

    def training_batch(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One augmented training batch as the model sees it: checks augmentation at a glance."""
        if not self.enabled:
            return
        count = min(32, len(images))
        captions = [[self.classes[i]] for i in labels[:count].tolist()]
        self._image("train/augmented_batch", image_grid(images[:count], captions, self.mean, self.std))

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
