"""`cnnbench-bench`: the epoch table by default; `--process` for whole processes, `--imagefolder`
for an image folder through its cache (the bench package measures each)."""

import sys

from cnnbench.cli.common import console_command


@console_command
def main() -> None:
    """Console entry point."""
    if sys.argv[1:2] == ["--process"]:  # the whole-process measures: start-up, sweeps, the allocator
        from cnnbench.bench.process import main as process_main

        process_main(sys.argv[2:])
    elif sys.argv[1:2] == ["--imagefolder"]:  # an image folder: the cache against decoding every epoch
        from cnnbench.bench.folder import main as folder_main

        folder_main(sys.argv[2:])
    else:
        from cnnbench.bench.epoch import main as epoch_main

        epoch_main(sys.argv[1:])


if __name__ == "__main__":
    main()
