"""glassbox: train and evaluate transparent (glass-box) CNNs with Lightning + Hydra."""

from glassbox import e2cnn_compat  # noqa: F401  (patch e2cnn for numpy 2 before any basis is built)

__version__ = "0.1.0"
