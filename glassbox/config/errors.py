"""One line per configuration mistake: ``error: <config key>: <cause>``.

Three moments a config can be wrong, one form of message:

* **composition** (Hydra merges the YAML files and the overrides onto the schemas): a wrong type,
  an unknown key, an enum value outside its set, a missing group option.
  :func:`composition_error` turns Hydra's and OmegaConf's exception into one line that keeps
  their own wording (it names the key and the allowed values); nothing has been written yet,
  Hydra has not even created the run directory.
* **start-up** (:func:`glassbox.config.checks.check_ranges`): ranges types cannot express.
* **build** (:func:`building`): any exception raised while an object is built from the config
  node at ``key`` (datamodule, model, optimizer, scheduler, callbacks, loggers, trainer).

Exceptions raised later, while training, are bugs or data problems and keep their traceback.
``GLASSBOX_TRACEBACK=1`` keeps the traceback of build errors too.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from glassbox.errors import ConfigError, GlassboxError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def composition_error(err: BaseException) -> ConfigError | None:
    """The one-line :class:`ConfigError` behind a Hydra composition error, else ``None``."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, MissingConfigException):
        # "Could not find 'model/resnet'\n\nAvailable options in 'model':\n\talexnet\n\tglassbox"
        m = re.search(r"Could not (?:find|load) '([^']+)'", str(err))
        group = m.group(1).rsplit("/", 1)[0] if m and "/" in m.group(1) else "defaults"
        text = re.split(r"\n\s*Config search path", str(err))[0]
        return ConfigError(f"{group}: {_one_line(re.sub(r'^In [^:]+: ', '', text))}")
    if isinstance(err, OverrideParseException):
        return ConfigError(f"override {_one_line(err)}")
    if not isinstance(err, ConfigCompositionException | OmegaConfBaseException):
        return None
    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        msg = _one_line(_without_details(getattr(cause, "msg", None) or str(cause)))
        known = _schema_keys(getattr(cause, "object_type", None))
        if known and re.match(r"Key '[^']+' not in", msg):
            msg += f" (keys: {', '.join(known)})"
        return ConfigError(f"{cause.full_key}: {msg}")
    text = _one_line(err)
    m = re.search(r"(?:override|Could not override|at) '?([\w.\-/]+)", text)
    return ConfigError(f"{m.group(1).split('=')[0] if m else 'config'}: {text}")


def _without_details(text: str) -> str:
    """OmegaConf's message without its ``full_key: ... object_type=...`` detail lines."""
    return re.split(r"\n\s*(?:full_key|reference_type|object_type)\b", text)[0]


def _schema_keys(object_type) -> list[str]:
    if object_type is None or not dataclasses.is_dataclass(object_type):
        return []
    return [f.name for f in dataclasses.fields(object_type) if not f.name.startswith("_")]


def _existing_key(root, key: str) -> str | None:
    """``key`` if it names a node of ``root``; OmegaConf writes a list item ``a.b.1`` as
    ``a.b1`` in Hydra's ``full_key``, so that form is tried too."""
    from omegaconf import OmegaConf

    if root is None:
        return key
    if OmegaConf.select(root, key, default=None, throw_on_missing=False) is not None:
        return key
    m = re.fullmatch(r"(.*[^\d.])(\d+)", key)
    if m and OmegaConf.select(root, f"{m.group(1)}.{m.group(2)}", default=None) is not None:
        return f"{m.group(1)}.{m.group(2)}"
    return None


def build_error(key: str, err: BaseException, root=None) -> GlassboxError:
    """The one-line user error for ``err``, raised while building the config node at ``key``
    (of the config ``root``, when given: it lets the message name a deeper node that failed)."""
    from hydra.errors import InstantiationException

    cause = err
    while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
        node = re.search(r"full_key: (\S+)", str(cause))
        deeper = _existing_key(root, node.group(1)) if node else None
        if deeper and deeper.startswith(key):
            key = deeper  # the deeper node that failed (model.net inside model)
        cause = cause.__cause__
    if isinstance(cause, InstantiationException):  # Hydra's own: e.g. a _target_ not found
        text = _one_line(re.sub(r"\s*full_key: \S+", "", str(cause)))
        return ConfigError(f"{key}: {text}")
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
    if isinstance(cause, TypeError) and unexpected:
        target = _target_of(err)
        known = _parameters(target)
        name = target.rsplit(".", 1)[-1] if target else "its target"
        return ConfigError(
            f"{key}.{unexpected.group(1)} is not an option of {name}: remove that override or fix "
            f"its spelling" + (f" (options: {', '.join(known)})" if known else "")
        )
    text = _one_line(cause) or type(cause).__name__
    if not isinstance(cause, GlassboxError | ValueError | TypeError) and not _is_config_error(
        cause
    ):
        text = f"{type(cause).__name__}: {text}"
    if not re.match(rf"{re.escape(key)}\b", text):
        text = f"{key}: {text}"
    error = ConfigError(text)
    error.key = key
    return error


def _is_config_error(err: BaseException) -> bool:
    """Lightning's own "you configured it wrong" (its message needs no class name)."""
    return type(err).__name__ == "MisconfigurationException"


def _target_of(err: BaseException) -> str | None:
    m = re.search(r"target '([\w.]+)'", str(err))
    return m.group(1) if m else None


def _parameters(target: str | None) -> list[str]:
    if not target:
        return []
    try:
        import hydra

        params = inspect.signature(hydra.utils.get_object(target)).parameters
    except (ImportError, ValueError, TypeError, AttributeError):
        return []
    return [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@contextmanager
def building(key: str, root=None) -> Iterator[None]:
    """Any exception raised inside becomes one :class:`ConfigError` naming ``key`` (a node of
    the config ``root``) and the cause."""
    try:
        yield
    except Exception as err:
        if os.environ.get("GLASSBOX_TRACEBACK") == "1":
            raise
        raise build_error(key, err, root) from err


def user_error(err: BaseException) -> GlassboxError | None:
    """The user-facing error behind ``err`` (a :class:`GlassboxError` in its cause chain, or a
    composition error); ``None`` for anything else (a bug: keep its traceback)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, GlassboxError):
            return cause
        cause = cause.__cause__
    return composition_error(err)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """User errors (composition, range, build) leave as ``SystemExit("error: ...")``: Python
    prints that one line to stderr and exits with status 1; any other exception propagates."""
    try:
        yield
    except Exception as err:
        user = user_error(err)
        if user is None:
            raise
        raise SystemExit(f"error: {_one_line(user)}") from None
