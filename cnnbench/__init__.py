"""cnnbench: train and compare the classic convolutional networks from one command line."""

from cnnbench.config.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
