# Makes conf/ the package cnnbench.conf (see pyproject), so the YAML tree ships inside the wheel.
