"""`cnnbench-export ckpt=PATH format=onnx|torchscript [out=PATH] [weights=auto|ema|live]`: the trained
model as one file (weights=auto: the averaged weights when the run kept an average).

Writes <checkpoint name>.onnx or <checkpoint name>.torchscript.pt beside the checkpoint (or to
out=PATH), then runs the file on a batch of the run's validation images (random inputs when the
dataset is not on this machine) and compares it with the PyTorch model: the largest difference
must stay within 1e-4, or the command fails with status 1. ONNX needs `pip install 'cnnbench[onnx]'`.
"""

from cnnbench.cli.common import console_command, parse_arguments, run_tool
from cnnbench.errors import say
from cnnbench.inference.export import ATOL, RTOL, TOOL, export


def _main(arguments: list[str]) -> int:
    options, _ = parse_arguments(arguments, {"ckpt": ..., "format": ..., "out": None, "weights": "auto"})
    result = export(options["ckpt"], options["format"], options["out"], options["weights"])
    path, allowed = result["path"], f"{ATOL:g} + {RTOL:g} x |logit|"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"checked on {result['inputs']}: max abs difference from PyTorch {result['difference']:.2e} "
          f"(allowed: {allowed})")
    if not result["matches"]:  # NaN never matches either
        say(f"{path} does not reproduce the model: its logits differ by up to {result['difference']:.2e}, "
            f"more than {allowed}", TOOL)
        return 1
    return 0


@console_command
def main() -> None:
    """Console entry point."""
    run_tool(TOOL, _main, __doc__)


if __name__ == "__main__":
    main()
