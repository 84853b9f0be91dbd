"""train() and evaluate(): everything the entry scripts do, driven by a composed Hydra config."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from glassbox.callbacks.base import analysis_results
from glassbox.config import register as register_schemas
from glassbox.config.checks import check_ranges
from glassbox.config.errors import building, one_line_errors
from glassbox.config.errors import user_error as _user_error
from glassbox.data.transforms import mean_over_turn
from glassbox.errors import ConfigError, NonFiniteLossError
from glassbox.runtime.checkpoints import (
    check_resumable,
    load_checkpoint,
    load_weights,
    net_name,
    resolve_resume_path,
)
from glassbox.runtime.devices import check_trainer_devices
from glassbox.runtime.launchers import ddp_job
from glassbox.runtime.rng import RNGStateCallback
from glassbox.utils.io import atomic_write_json

log = logging.getLogger(__name__)
register_schemas()  # the resolvers and the config schemas, before Hydra composes


# --------------------------------------------------------------------------- building blocks
# Each build_* turns any exception raised while it builds an object from a config node into one
# ConfigError naming that node (glassbox.config.errors.building): the entry points print it as
# `error: <key>: <cause>`.
def build_datamodule(cfg: DictConfig, **overrides: Any):
    with building("data", cfg):
        dm = hydra.utils.instantiate(cfg.data, **overrides)
        dm.setup("fit")
    return dm


def build_module(cfg: DictConfig, dm) -> pl.LightningModule:
    with building("model", cfg):
        module = hydra.utils.instantiate(cfg.model)
    net = module.net
    for attr, have in (
        ("in_channels", dm.channels),
        ("num_classes", dm.num_classes),
        ("image_size", dm.image_size),
    ):
        want = getattr(net, attr, have)
        if want != have:
            raise ConfigError(
                f"model.net.{attr}={want} does not match the data ({have}): remove the model.net.{attr} override; "
                f"it follows data.{'channels' if attr == 'in_channels' else attr} by default"
            )
    _build_optimizer(module)
    module.run_config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return module


def _build_optimizer(module) -> None:
    """Build the optimizer and scheduler once, now: Lightning would only do it inside fit."""
    make_optimizer = getattr(module, "optimizer_factory", None)
    if make_optimizer is None:
        return
    with building("model.optimizer"):
        optimizer = make_optimizer(params=[p for p in module.parameters() if p.requires_grad])
    make_scheduler = getattr(module, "scheduler_factory", None)
    if make_scheduler is not None:
        with building("model.scheduler"):
            make_scheduler(optimizer=optimizer)


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[pl.Callback]:
    callbacks = []
    for name, conf in (cfg.get("callbacks") or {}).items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        if not has_logger and conf._target_.endswith("LearningRateMonitor"):
            log.info("no logger configured: skipping the %s callback", name)
            continue
        with building(f"callbacks.{name}", cfg):
            callbacks.append(hydra.utils.instantiate(conf))
    # Random streams go into every checkpoint so a resumed run continues them exactly.
    callbacks.append(RNGStateCallback())
    return callbacks


def _logger_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    return {
        name: conf
        for name, conf in (cfg.get("logger") or {}).items()
        if isinstance(conf, DictConfig) and "_target_" in conf
    }


def has_logger(cfg: DictConfig) -> bool:
    return bool(_logger_nodes(cfg))


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for name, conf in _logger_nodes(cfg).items():
        with building(f"logger.{name}", cfg):
            loggers.append(hydra.utils.instantiate(conf))
    return loggers


def build_trainer(
    cfg: DictConfig, module=None, callbacks: list[pl.Callback] | None = None, **kwargs: Any
) -> pl.Trainer:
    """Callbacks (unless given), loggers, then the Trainer; with ``module``, each callback that
    has a ``check_module(module)`` hook checks that it can run on that model, now (before fit)."""
    if callbacks is None:
        callbacks = build_callbacks(cfg, has_logger(cfg))
    if module is not None:
        check_callbacks(callbacks, module)
    check_trainer_devices(cfg.trainer)  # trainer=gpu without CUDA etc.: one line, before any logger
    loggers = build_loggers(cfg)
    with building("trainer", cfg):
        return hydra.utils.instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, **kwargs
        )


def check_callbacks(callbacks: list[pl.Callback], module: pl.LightningModule) -> None:
    for cb in callbacks:
        # the analysis callbacks check their options against the model before it trains
        check = getattr(cb, "check_module", None)
        if callable(check):
            with building(f"callbacks.{getattr(cb, 'name', type(cb).__name__)}"):
                check(module)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, int | float):
            out[k] = float(v)
    return out


def run_tests(
    cfg: DictConfig, trainer: pl.Trainer, module, dm, ckpt_path: str | None
) -> dict[str, Any]:
    """The test split, then the configured rotated test sets; returns flat metrics."""
    results: dict[str, Any] = {}
    module.set_test_prefix("test")
    results.update(
        _scalars(trainer.test(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False)[0])
    )
    if module.confusion_matrix is not None:
        results["test/confusion_matrix"] = module.confusion_matrix.tolist()
    rot = cfg.get("rotated_test") or {}
    passes = []
    if rot.get("random"):
        passes.append(("test_rotated", {"split": "test", "mode": "random", "angle": 0.0}))
    for angle in rot.get("angles") or []:
        passes.append(
            (f"test_rot{float(angle):g}", {"split": "test", "mode": "fixed", "angle": float(angle)})
        )
    for prefix, rotation in passes:
        rdm = build_datamodule(cfg, rotation=rotation)
        module.set_test_prefix(prefix)
        # After the first pass the module already holds the tested weights: no reload.
        results.update(_scalars(trainer.test(module, datamodule=rdm, verbose=False)[0]))
    module.set_test_prefix("test")
    by_angle = {float(a): results.get(f"test_rot{float(a):g}/acc") for a in rot.get("angles") or []}
    if by_angle and None not in by_angle.values():
        # the headline of "trained upright, tested rotated": accuracy averaged over the angles
        results["test_rot_mean/acc"] = mean_over_turn(by_angle)
    return results


def _finish_wandb() -> None:
    # One W&B run per job: a multirun's next job must not log into this one.
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:
        pass


def _write_metrics(cfg: DictConfig, metrics: dict[str, Any], extra: dict[str, Any]) -> Path:
    path = Path(cfg.paths.output_dir) / "metrics.json"
    # insertion order: the analysis scalars stay in layer-depth order for the report's tables
    atomic_write_json(path, {**extra, "metrics": metrics}, sort_keys=False)
    log.info("metrics written to %s", path)
    return path


def _write_report(cfg: DictConfig) -> None:
    """The run's report.html, from the files just written; a failure only warns."""
    try:
        from glassbox.reporting.run_report import build_run_report

        path = build_run_report(cfg.paths.output_dir)
    except Exception as err:  # noqa: BLE001 - the report never fails a finished run
        log.warning("could not build the run report: %s: %s", type(err).__name__, err)
        return
    log.info("report: %s", path)


def _seed(cfg: DictConfig) -> None:
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)


# --------------------------------------------------------------------------- entry points
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; write metrics.json; return all metrics."""
    # Everything that can be wrong with the config fails here, before anything is written.
    check_ranges(cfg)
    check_trainer_devices(cfg.trainer)  # before the model is built (seconds for e2cnn bases)
    callbacks = build_callbacks(cfg, has_logger(cfg))  # they need no model: fail fast
    _seed(cfg)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    # "last" → the newest checkpoint of this run dir; any checkpoint must fit the configured model
    # (checked before the loggers write anything into the run dir).
    ckpt_path = resolve_resume_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if ckpt_path:
        check_resumable(module, ckpt_path)
    trainer = build_trainer(cfg, module, callbacks)
    for logger in trainer.loggers:
        logger.log_hyperparams(module.run_config)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    except NonFiniteLossError:
        _finish_wandb()
        raise
    metrics = _scalars(trainer.callback_metrics)
    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint: testing the current weights")
        metrics.update(run_tests(cfg, trainer, module, dm, best or None))
    metrics.update(analysis_results(trainer))  # the analysis callbacks' final scalars (rank 0)
    if trainer.is_global_zero:
        _write_metrics(
            cfg,
            metrics,
            {
                "task": "train",
                "model": cfg.model.get("name"),
                "data": cfg.data.name,
                "best_ckpt": getattr(trainer.checkpoint_callback, "best_model_path", None),
            },
        )
        _write_report(cfg)
    _finish_wandb()
    return metrics


def optimized_metric(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name!r} was not logged; set optimized_metric to one of the logged metrics: "
            f"{', '.join(sorted(metrics))}"
        )
    value = float(metrics[name])
    return value if math.isfinite(value) else None


DATA_SHAPE = (
    ("channels", "channel(s)"),
    ("image_size", "pixels per side"),
    ("num_classes", "classes"),
)


def check_data_fits(trained: DictConfig, data: DictConfig, ckpt_path: Any) -> None:
    """Raise one :class:`ConfigError` naming every mismatch between the data a checkpoint was
    trained on and the data it is asked to run on (channels, image size, number of classes)."""
    have = {key: OmegaConf.select(data, key) for key, _ in DATA_SHAPE}
    want = {key: OmegaConf.select(trained, key) for key, _ in DATA_SHAPE}
    bad = [
        (key, words)
        for key, words in DATA_SHAPE
        if want[key] is not None and have[key] != want[key]
    ]
    if not bad:
        return
    name, trained_name = data.get("name", "the data"), trained.get("name", "its data")
    diffs = ", ".join(f"{have[k]} {w} instead of {want[k]}" for k, w in bad)
    fixes = " ".join(f"data.{k}={want[k]}" for k, _ in bad if k != "num_classes")
    raise ConfigError(
        f"data={name} does not fit checkpoint {ckpt_path}, which was trained on {trained_name}: "
        f"{name} has {diffs}; evaluate on data with {', '.join(f'{want[k]} {w}' for k, w in DATA_SHAPE)}"
        + (f" (e.g. override {fixes})" if fixes else "")
        + (
            f", or pick data.classes to match its {want['num_classes']} classes"
            if any(k == "num_classes" for k, _ in bad)
            else ""
        )
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the model from a checkpoint's stored config and test it (optionally rotated) on the
    data it was trained on, or on ``data=<name>`` when channels, image size and classes fit."""
    ckpt = load_checkpoint(cfg.get("ckpt_path"))
    stored = OmegaConf.create(ckpt["glassbox"]["config"])
    requested = cfg.get("model_name")
    if requested and requested != net_name(ckpt):
        raise ConfigError(
            f"checkpoint {cfg.ckpt_path} holds a {net_name(ckpt)!r} model but model={requested} was requested; "
            "drop the model override (evaluate.py rebuilds the model from the checkpoint) or pass a matching checkpoint"
        )
    # The checkpoint decides the model and, unless data=<name> is given, the data; evaluate.yaml
    # decides the run (trainer, loggers, tests).
    run_cfg = cfg.copy()
    with open_dict(run_cfg):
        run_cfg.model = stored.model
        base = cfg.data if cfg.get("data") is not None else stored.data
        run_cfg.data = OmegaConf.merge(base, cfg.get("data_overrides") or {})
    check_data_fits(stored.data, run_cfg.data, cfg.ckpt_path)
    check_ranges(run_cfg)
    check_trainer_devices(run_cfg.trainer)
    _seed(run_cfg)
    dm = build_datamodule(run_cfg)
    module = build_module(run_cfg, dm)
    load_weights(module, ckpt, cfg.ckpt_path)
    trainer = build_trainer(run_cfg, module)
    metrics = run_tests(run_cfg, trainer, module, dm, None)
    metrics.update(analysis_results(trainer))
    if trainer.is_global_zero:
        _write_metrics(
            run_cfg,
            metrics,
            {
                "task": "evaluate",
                "ckpt_path": str(cfg.ckpt_path),
                "model": run_cfg.model.get("name"),
                "data": run_cfg.data.name,
            },
        )
        _write_report(run_cfg)
    _finish_wandb()
    return metrics


def run(cfg: DictConfig, task) -> float | None:
    """Entry-point wrapper: a user error (bad config value, missing data, bad checkpoint) is one
    line ``error: ...`` on stderr and exit status 1, and a run directory that holds nothing but
    what Hydra wrote at start-up is removed again; anything else keeps its traceback."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    try:
        with one_line_errors():
            # one process group and one run directory per job, also in a multirun (see launchers.py)
            with ddp_job():
                metrics = task(cfg)
            return optimized_metric(cfg, metrics) if task is train else None
    except SystemExit:
        _discard_unused_run_dir(cfg)
        raise


def user_error(err: BaseException):
    """The user-facing :class:`~glassbox.errors.GlassboxError` behind ``err``, or ``None`` for
    anything else (a bug: keep its traceback). See :mod:`glassbox.config.errors`."""
    return _user_error(err)


# What Hydra writes into a run directory before the task starts.
_HYDRA_FILES = {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"}


def _discard_unused_run_dir(cfg: DictConfig) -> None:
    """Remove the run directory of a job that failed before writing anything: Hydra creates it,
    with ``.hydra/`` and the job's log file, before the task runs. A directory holding anything
    else (an earlier run's files, a resumed run's checkpoints) is left alone."""
    try:
        out = Path(cfg.paths.output_dir)
        log_file = f"{cfg.get('task_name')}.log"
    except Exception:  # noqa: BLE001 - no paths: nothing to clean
        return
    if not (out / ".hydra").is_dir():
        return
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    if not files <= _HYDRA_FILES | {log_file}:
        return
    for handler in logging.getLogger().handlers[:]:
        if Path(getattr(handler, "baseFilename", "/")).parent == out:
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(out, ignore_errors=True)
