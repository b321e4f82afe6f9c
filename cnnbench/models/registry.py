"""A name -> builder registry, so one name reaches every model (CLI, tests, summary)."""

from collections.abc import Callable

from torch import nn

ModelBuilder = Callable[..., nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Register a model builder under its function name; a duplicate name is an error."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _BUILDERS[name] = builder
    return builder


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model `name` with the builder's keyword arguments."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _BUILDERS[name](**kwargs)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_BUILDERS)
