"""W&B logger factory: offline unless the user configured W&B online, and never blocking."""

from __future__ import annotations

import logging
import netrc
import os
import socket
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, timeout: float = 2.0) -> bool:
    """Whether ``host:443`` accepts a connection within ``timeout`` seconds, name lookup included:
    ``getaddrinfo`` ignores socket timeouts (a dead DNS server stalls it for many seconds), so the
    probe runs in a daemon thread that is abandoned when the time is up."""
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="wandb-reachability", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def resolve_mode(mode: str = "auto") -> str:
    """``auto`` → ``online`` only when credentials exist (or WANDB_MODE=online) and the server
    answers within 2 s; otherwise ``offline``. ``WANDB_MODE`` in the environment wins."""
    if mode not in MODES:
        from glassbox.errors import ConfigError

        raise ConfigError(
            f"logger.wandb.mode={mode!r} is not a W&B mode; set it to one of {', '.join(MODES)}"
        )
    env = os.environ.get("WANDB_MODE")
    if env in ("disabled", "offline", "dryrun"):
        return "disabled" if env == "disabled" else "offline"
    if mode == "auto":
        mode = "online" if env == "online" or _has_credentials() else "offline"
    if mode == "online":
        host = (
            os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
            .split("://")[-1]
            .split("/")[0]
            .split(":")[0]
        )
        if not _reachable(host):
            log.warning(
                "W&B: %s is not reachable; logging offline instead (sync later with `wandb sync`).",
                host,
            )
            return "offline"
    return mode


def wandb_logger(mode: str = "auto", save_dir: str | Path = ".", **kwargs: Any):
    """A Lightning ``WandbLogger`` in the resolved mode; its files go under ``save_dir``."""
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("settings", _settings())
    return WandbLogger(
        save_dir=str(save_dir), offline=resolved == "offline", mode=resolved, **kwargs
    )


def _settings():
    import wandb

    # Short timeouts: a dead network must not stall training.
    return wandb.Settings(init_timeout=30, x_disable_stats=False, silent=True)


def wandb_group() -> str | None:
    """Group W&B runs of one multirun by the sweep directory's name."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return Path(hc.sweep.dir).name
    except (ValueError, ImportError):
        pass
    return None
