"""A trained model as one ONNX or TorchScript file (cnnbench-export), checked against PyTorch on a
batch of the run's validation images (random inputs when the dataset is not on this machine)."""

import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from cnnbench import files
from cnnbench.data import build_data
from cnnbench.errors import CnnbenchError
from cnnbench.inference.checkpoints import open_checkpoint, rebuild_model

TOOL = "cnnbench-export"
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}  # format -> file name suffix
# How far the file's logits may be from PyTorch's, as in torch.allclose: ATOL + RTOL x |logit|.
# ATOL decides for ordinary logits; RTOL only for huge ones (float32 keeps about 7 digits, so
# logits in the hundreds differ by more than 1e-4 from rounding alone).
ATOL, RTOL = 1e-4, 1e-5


def check_inputs(checkpoint: dict) -> tuple[torch.Tensor, str]:
    """Up to 32 validation images of the run's dataset, or random inputs without it; and which."""
    cfg = OmegaConf.create(checkpoint["config"])
    if "download" in cfg.data:
        cfg.data.download = False  # a check batch is not worth a download
    try:
        data = build_data(cfg.data, batch_size=32, seed=cfg.seed, device=torch.device("cpu"))
        split, stream = next((name, stream) for name, stream in (("validation", data.val), ("test", data.test),
                                                                   ("training", data.train)) if stream is not None)
        images = next(iter(stream))[0]
        return images, f"{len(images)} {split} images of {cfg.data.name}"
    except CnnbenchError:
        shape = (8, checkpoint["in_channels"], *checkpoint["image_size"])
        random = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        return random, f"8 random inputs (no {cfg.data.name} data at data.root={cfg.data.get('root')} here)"


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> nn.Module:
    """Trace the model into a TorchScript file (written whole, saying it is cnnbench-export's) and
    load it back."""
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but its files still load in C++ and
        # in older PyTorch. The tracer's warnings are about shape checks, and the input shape is
        # fixed to the training size, so those branches are constant.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.trace(model, example), buffer, _extra_files={files.WRITTEN_BY: TOOL})
        files.write_whole(path, lambda file: file.write(buffer.getbuffer()))
        return torch.jit.load(str(path))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path):
    """Export to ONNX with a free batch size; return a function that runs the file in onnxruntime."""
    needed = ("onnx", "onnxscript", "onnxruntime")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise CnnbenchError(f"format=onnx needs {', '.join(missing)}: pip install 'cnnbench[onnx]'")
    import onnxruntime

    try:
        # The torch.export-based exporter (the default since PyTorch 2.9; the TorchScript-based
        # one is deprecated). Dim("batch"): any batch size, not only the example's.
        program = torch.onnx.export(model, (example,), None, dynamo=True, verbose=False,
                                    input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
        proto = program.model_proto
    except Exception as error:  # the exporter raises many types; all mean the same to a user
        raise CnnbenchError(f"ONNX export failed: {str(error).strip().splitlines()[0]}") from None
    proto.metadata_props.add(key=files.WRITTEN_BY, value=TOOL)  # what tells a later export its file
    # the weights inside the one .onnx file (not in a .onnx.data beside it), written whole
    files.write_whole(path, lambda file: file.write(proto.SerializeToString()))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def export(ckpt: str | Path, file_format: str, out: str | Path | None = None, weights: str = "auto"
           ) -> dict[str, Any]:
    """Write the export file and compare it with PyTorch: path, difference, matches, inputs used."""
    if file_format not in FORMATS:
        raise CnnbenchError(f"format={file_format!r} is not supported: use {' or '.join(FORMATS)}")
    suffix = FORMATS[file_format]
    ckpt = Path(ckpt)
    path = Path(out) if out else ckpt.with_name(ckpt.stem + suffix)
    # Overwrite only an earlier export, never a checkpoint or another file of the user's (a
    # best.onnx of their own): before the work
    files.check_output(path, TOOL, what=f"give out= a new name ending in {suffix}")
    checkpoint = open_checkpoint(ckpt)
    model = rebuild_model(checkpoint, ckpt, weights=weights)
    images, source = check_inputs(checkpoint)
    example = images[:2] if len(images) > 1 else images.repeat(2, 1, 1, 1)
    exported = (export_onnx if file_format == "onnx" else export_torchscript)(model, example, path)
    with torch.no_grad():
        expected, logits = model(images), exported(images)
    return {"path": path, "difference": (logits - expected).abs().max().item(), "inputs": source,
            "matches": torch.allclose(logits, expected, rtol=RTOL, atol=ATOL)}
