"""glassbox: train and evaluate transparent (glass-box) CNNs with Lightning + Hydra."""

from glassbox import e2cnn_compat  # noqa: F401  (patch e2cnn for numpy 2 before any basis is built)

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]


def __getattr__(name: str):
    # lazy: `import glassbox` stays light (no Lightning/Hydra import until load_run is used)
    if name in ("load_run", "find_checkpoint"):
        from glassbox import api

        return getattr(api, name)
    raise AttributeError(f"module 'glassbox' has no attribute {name!r}")
