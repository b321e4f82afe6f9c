"""The model zoo: one file per family, every builder registered by name."""

from cnnbench.models.registry import get_model, list_models, register_model

# Importing a family module registers its builders.
from cnnbench.models import lenet, mlp  # noqa: E402,F401  isort: skip

__all__ = ["get_model", "list_models", "register_model"]
