"""`python -m cnnbench` = the `cnnbench` command (torchrun needs a module to start)."""

from cnnbench.cli.train import main

main()
