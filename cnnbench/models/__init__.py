"""The model zoo: one file per family, every builder registered by name."""

from cnnbench.models.registry import get_model, list_models, register_model

# Importing a family module registers its builders.
from cnnbench.models import (  # noqa: F401  isort: skip
    alexnet, densenet, googlenet, lenet, mlp, nin, resdensenet, resnet, resnet9, small_cnn, vgg,
)

__all__ = ["get_model", "list_models", "register_model"]
