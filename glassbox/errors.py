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


class AnalysisInputError(GlassboxError, ValueError):
    """An analysis got input it cannot use: a bad option, layer name, image batch or labels."""


class AnalysisTypeError(GlassboxError, TypeError):
    """An analysis got an object of the wrong kind (a model it cannot split, a non-tensor)."""


class AnalysisIndexError(GlassboxError, IndexError):
    """An index into an analysis' reference set is out of range."""


class AnalysisStateError(GlassboxError, RuntimeError):
    """An analysis object is used before it is ready (e.g. a readout that is not fitted)."""


class ReportInputError(GlassboxError, FileNotFoundError):
    """A report was pointed at files or run directories that hold none of its inputs."""
