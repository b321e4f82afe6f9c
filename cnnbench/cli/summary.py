"""`cnnbench-summary model=NAME data=NAME`: each layer's output shape and parameters, and the totals.

What the course notebooks print by hand before training: run a dummy batch of the dataset's
shape through the model and report every layer's output. Totals count multiply-accumulates
with torch's own FLOP counter (1 MAC = 2 FLOPs).
"""

import sys

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from cnnbench.cli.common import console_command, exit_on_closed_pipe, fail, hydra_command_line
from cnnbench.config.checks import check_config
from cnnbench.config.keys import model_name
from cnnbench.config.shapes import input_shape
from cnnbench.engine.build import build_model
from cnnbench.engine.model_input import check_image_size
from cnnbench.errors import CnnbenchError
from cnnbench.models.cost import macs, parameters


def layer_table(model: nn.Module, images: torch.Tensor) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, type, output shape, own parameters) for every leaf layer, in the order they run."""
    rows = []

    def record(name: str):
        def hook(module, inputs, output):
            output = output[0] if isinstance(output, tuple) else output
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append((name, type(module).__name__, tuple(output.shape[1:]), params))
        return hook

    leaves = [(name, m) for name, m in model.named_modules() if not any(m.children())]
    handles = [module.register_forward_hook(record(name)) for name, module in leaves]
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def summarize(cfg: DictConfig) -> str:
    """The printed summary of cfg.model on one image of cfg.data's shape."""
    channels, height, width, classes = input_shape(cfg.data)
    # shapes only: pretrained weights (model.weights) would change no number here, nor need fetching

    def build(size: list[int]) -> nn.Module:
        return build_model(cfg.model, load_weights=False, num_classes=classes, in_channels=channels,
                           image_size=size)

    model = build([height, width])
    check_image_size(model, cfg, channels, height, width, torch.device("cpu"), build)
    images = torch.zeros(1, channels, height, width)
    rows = layer_table(model, images)
    per_image = macs(model, images)
    lines = [f"{model_name(cfg.model)} on {cfg.data.name}: input {channels}x{height}x{width}, {classes} classes",
             f"{'layer':<36} {'type':<20} {'output shape':<18} {'parameters':>12}"]
    lines += [f"{layer:<36} {kind:<20} {'x'.join(map(str, shape)):<18} {params:>12,}"
              for layer, kind, shape, params in rows]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines += [f"total parameters: {parameters(model):,} ({trainable:,} trainable)",
              f"multiply-accumulates per image: {per_image:,} ({per_image / 1e6:,.1f} M MACs, "
              f"{2 * per_image / 1e9:,.3f} GFLOPs)"]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _summary(cfg: DictConfig) -> None:
    try:
        check_config(cfg)
        print(summarize(cfg), flush=True)
    except BrokenPipeError:  # inside Hydra's task, which would report it as a failure
        exit_on_closed_pipe()
    except CnnbenchError as error:
        fail(str(error), "cnnbench-summary")


@console_command
def main() -> None:
    """Console entry point; prints only, writes no run folder."""
    with hydra_command_line([*sys.argv[1:], "hydra.run.dir=.", "hydra.output_subdir=null",
                             "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]):
        _summary()


if __name__ == "__main__":
    main()
