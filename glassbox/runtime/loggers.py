"""Loggers: the W&B factory (offline unless the user configured W&B online, and never
blocking) and :class:`ResumableCSVLogger`, a CSV logger whose file survives a resume."""

from __future__ import annotations

import csv
import io
import logging
import netrc
import os
import socket
import threading
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from glassbox.utils.io import atomic_write_text

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


RUN_ID_FILE = Path("wandb") / "run_id"


def run_id(save_dir: str | Path) -> str | None:
    """The W&B run id of the run directory ``save_dir``: read from ``<save_dir>/wandb/run_id``, or
    drawn and stored there on the first start, so that a resumed or requeued run (same run dir)
    continues the same W&B run. ``None`` on ranks other than 0, which never start a W&B run."""
    from glassbox.runtime.launchers import process_rank

    path = Path(save_dir) / RUN_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    if process_rank() != 0:
        return None
    import secrets
    import string

    from glassbox.utils.io import atomic_write_text

    # W&B's own id format: 8 characters of [a-z0-9]
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, new + "\n")
    return new


def wandb_logger(
    mode: str = "auto",
    save_dir: str | Path = ".",
    log_model: bool | str = False,
    id: str | None = None,  # noqa: A002  (W&B's name for it)
    **kwargs: Any,
):
    """A Lightning ``WandbLogger`` in the resolved mode; its files go under ``save_dir``.

    The run id is ``id`` or the one stored in the run directory (:func:`run_id`), with
    ``resume="allow"``: a resumed or requeued run logs into the same W&B run. ``log_model``
    (``true``: best and last checkpoints as artifacts at the end of training; ``all``: every
    checkpoint as it is written) needs a server: offline or disabled, it is turned off with a
    warning instead of failing."""
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if log_model and resolved != "online":
        log.warning(
            "W&B is %s: logger.wandb.log_model=%s is turned off (checkpoints upload only online; "
            "they stay in the run directory)",
            resolved,
            log_model,
        )
        log_model = False
    kwargs.setdefault("settings", _settings())
    kwargs.setdefault("resume", "allow")
    return WandbLogger(
        save_dir=str(save_dir),
        offline=resolved == "offline",
        mode=resolved,
        log_model=log_model,
        id=id or run_id(save_dir),
        **kwargs,
    )


def wandb_job_suffix() -> str:
    """``-job<n>`` for job ``n`` of a Hydra multirun, ``-slurm<job id>`` inside a SLURM job (array
    jobs: ``<array id>_<task id>``): with model and seed in the name, every job's run name is unique."""
    parts = []
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            parts.append(f"job{hc.job.num}")
    except (ValueError, ImportError):
        pass
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    slurm = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    if slurm:
        parts.append(f"slurm{slurm}")
    return "".join(f"-{p}" for p in parts)


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


# --------------------------------------------------------------------------- CSV logging
class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts; this one keeps it
    and appends, repairs a last row that a SIGKILL cut short, and rewrites the file atomically
    when new columns appear."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        original = path.read_text()
        text = original
        if text and not text.endswith("\n"):  # the process died mid-row: drop the torso
            text = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(io.StringIO(text)))
        header = next(csv.reader(io.StringIO(text)), [])
        self.metrics_keys = sorted(header)
        if text != original or header != self.metrics_keys:
            self._write_all(rows)
        log.info("continuing %s (%d rows kept)", path, len(rows))

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, buf.getvalue())

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        self.metrics_keys = list(fieldnames)
        self._write_all(rows)

    def log_hparams(self, params: dict[str, Any]) -> None:
        from lightning.pytorch.core.saving import save_hparams_to_yaml

        self.hparams.update(params)
        target = Path(self.log_dir) / self.NAME_HPARAMS_FILE
        tmp = target.with_name(f".{target.name}.tmp")
        save_hparams_to_yaml(tmp, self.hparams)
        os.replace(tmp, target)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume in the same run directory: earlier
    rows are kept and the resumed run appends (rows of the epoch that was cut short may appear
    twice; the ``epoch``/``step`` columns tell them apart). Local directories only."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
