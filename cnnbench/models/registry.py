"""A name -> builder registry, so one name reaches every model (CLI, tests, summary)."""

import inspect
from collections.abc import Callable
from importlib.metadata import entry_points

from torch import nn

ModelBuilder = Callable[..., nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}
# Installed packages that add models name a module to import under this entry point group; the
# import registers their builders (pyproject: [project.entry-points."cnnbench.models"] mine = "pkg.models").
PLUGIN_GROUP = "cnnbench.models"


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


def pretrained_models() -> list[str]:
    """Names of the registered models whose builder takes `weights` (pretrained weights), sorted."""
    return [name for name in list_models() if takes_weights(_BUILDERS[name])]


def takes_weights(builder: ModelBuilder) -> bool:
    """Whether a model builder takes pretrained `weights` (torchvision's, for ResNet, VGG, DenseNet)."""
    return "weights" in inspect.signature(builder).parameters


def registered_builder(target: str) -> ModelBuilder | None:
    """The registered builder a config's `_target_` (module.function) names, or None."""
    def find() -> ModelBuilder | None:
        return next((builder for builder in _BUILDERS.values()
                     if f"{builder.__module__}.{builder.__name__}" == target), None)

    if find() is None:
        for plugin in entry_points(group=PLUGIN_GROUP):
            plugin.load()  # an installed package the user chose: importing it registers its models
    return find()
