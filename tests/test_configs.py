"""Every option of every config group composes, and everything it names instantiates."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import DictConfig

from conftest import CONF, FAST, compose
from glassbox import pipeline
from glassbox.config.checks import check_ranges


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_groups_exist():
    for group, must in {
        "data": {"digits", "shapes", "mnist", "fashion_mnist", "cifar10"},
        "model": {"glassbox", "alexnet"},
        "trainer": {"default", "cpu", "gpu", "ddp"},
        "logger": {"wandb", "csv", "tensorboard", "none"},
        "debug": {"fast_dev_run", "overfit", "limit_batches"},
    }.items():
        assert must <= set(options(group)), group


@pytest.mark.parametrize("data", options("data"))
def test_data_options_instantiate(cfg_train, data):
    cfg = cfg_train(f"data={data}")
    check_ranges(cfg)  # every option is typed by the data schema and within its ranges
    dm = hydra.utils.instantiate(cfg.data)
    assert (
        dm.name == data
        and dm.image_size == cfg.data.image_size
        and dm.channels == cfg.data.channels
    )
    assert cfg.model.net.in_channels == cfg.data.channels  # flows from data into model
    if data in ("digits", "shapes"):
        dm.setup()
        x, _ = dm.analysis_batch(n=2)
        assert x.shape == (2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("data", ["digits", "cifar10"])
def test_model_options_instantiate_for_data(cfg_train, model, data):
    cfg = cfg_train(f"model={model}", f"data={data}")
    check_ranges(cfg)
    module = hydra.utils.instantiate(cfg.model)
    x = torch.zeros(2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    assert module.eval()(x).shape == (2, cfg.data.num_classes)
    module.configure_optimizers()


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options(cfg_train, trainer):
    cfg = cfg_train(f"trainer={trainer}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.precision == "16-mixed"  # composes; needs a GPU to instantiate
        return
    if str(cfg.trainer.get("strategy", "")).startswith("ddp"):
        cfg.trainer.accelerator = "cpu"
    t = hydra.utils.instantiate(cfg.trainer)
    assert t.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_options(cfg_train, logger):
    cfg = cfg_train(f"logger={logger}")
    loggers = pipeline.build_loggers(cfg)
    assert (len(loggers) == 0) == (logger == "none")


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_callback_options(tmp_path, callbacks):
    cfg = compose(
        "train",
        [o for o in FAST if not o.startswith("callbacks.")] + [f"callbacks={callbacks}"],
        tmp_path,
    )
    for cb in pipeline.build_callbacks(cfg, has_logger=True):
        assert hasattr(cb, "on_fit_start")


@pytest.mark.parametrize("group", ["debug", "experiment", "variant"])
def test_debug_and_experiment_options_compose(cfg_train, group):
    for option in options(group):
        cfg = cfg_train(f"{group}={option}")
        assert isinstance(cfg, DictConfig) and cfg.model.net._target_
        check_ranges(cfg)


def test_evaluate_config_composes(cfg_eval):
    cfg = cfg_eval("ckpt_path=some.ckpt")
    assert cfg.ckpt_path == "some.ckpt" and cfg.rotated_test.random is True
    assert Path(cfg.paths.output_dir).name == "eval"
