"""Error types that carry one clear message: what went wrong and how to fix it."""


class GlassboxError(Exception):
    """Base class for user-facing errors (bad config, data, checkpoint or analysis input)."""


class ConfigError(GlassboxError, ValueError):
    """A configuration value is invalid or inconsistent."""


class DatasetUnavailableError(GlassboxError, FileNotFoundError):
    """A dataset is not on disk and cannot be downloaded."""


class CheckpointError(GlassboxError, ValueError):
    """A checkpoint is missing, corrupt, unsafe or belongs to another model."""


class NonFiniteLossError(GlassboxError, FloatingPointError):
    """Training produced a NaN/Inf loss."""
