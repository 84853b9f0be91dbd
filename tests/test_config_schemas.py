"""Configs as a typed interface: schemas, start-up range checks, one-line errors, --help, docs."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import FAST, ROOT, compose, run_script
from glassbox.config import checks, cli, docs, schemas
from glassbox.config.errors import build_error, composition_error, one_line_errors
from glassbox.data import GlassBoxDataModule
from glassbox.errors import ConfigError
from glassbox.models.alexnet import AlexNet
from glassbox.models.glassbox_net import GlassBoxNet
from glassbox.models.module import ClassificationModule


def _params(cls) -> set[str]:
    return {
        n
        for n, p in inspect.signature(cls.__init__).parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _fields(schema) -> set[str]:
    return {f.name for f in dataclasses.fields(schema) if f.name != "_target_"}


# --------------------------------------------------------------------------- schemas follow the code
@pytest.mark.parametrize("name", sorted(schemas.ANALYSIS_CALLBACKS))
def test_analysis_callback_schema_is_the_constructor_signature(name):
    schema = schemas.analysis_callbacks()[name]
    cls = __import__("hydra").utils.get_class(schemas.ANALYSIS_CALLBACKS[name])
    assert _fields(schema) == _params(cls)
    defaults = {f.name: f for f in dataclasses.fields(schema)}
    for pname, param in inspect.signature(cls.__init__).parameters.items():
        if pname in defaults and not isinstance(param.default, tuple | Path):
            assert defaults[pname].default == param.default, pname
    # every key has a meaning (from the docstring) for docs/configuration.md
    assert all(f.metadata["help"] for f in dataclasses.fields(schema)), [
        f.name for f in dataclasses.fields(schema) if not f.metadata["help"]
    ]


def test_a_constructor_argument_added_to_a_callback_is_a_typed_key():
    class Probe:
        """A callback.

        Args:
            width: how wide.
            names / order: the names; kept in this order.
        """

        def __init__(
            self,
            width: int = 3,
            names: Sequence[str] | None = None,
            order: str | Path = "a",
            ratio: float | None = 0.5,
            spec: Sequence[str] | dict | None = None,
        ) -> None: ...

    schema = schemas.callback_schema(Probe)
    assert _fields(schema) == {"width", "names", "order", "ratio", "spec"}
    node = OmegaConf.structured(schema)
    assert node.width == 3 and node.order == "a" and node.spec is None
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(schema)}
    assert helps["width"] == "how wide." and helps["order"] == "the names; kept in this order."
    with pytest.raises(Exception, match="could not be converted to Integer"):
        node.width = "wide"
    with pytest.raises(Exception, match="could not be converted to Float"):
        node.ratio = "half"
    node.names = ["a", "b"]
    node.spec = {"any": "thing"}  # a union of a list and a mapping stays untyped


@pytest.mark.parametrize(
    ("schema", "cls"),
    [
        (schemas.GlassBoxNetConfig, GlassBoxNet),
        (schemas.AlexNetConfig, AlexNet),
    ],
)
def test_net_schemas_are_the_constructor_signatures(schema, cls):
    assert _fields(schema) == _params(cls)


def test_data_and_model_schema_keys_are_constructor_arguments():
    assert _fields(schemas.DataConfig) <= _params(GlassBoxDataModule)
    model = _fields(schemas.ModelConfig)
    assert model <= _params(ClassificationModule)
    assert _params(ClassificationModule) - model == {"pca_fit_samples", "pca_refit_fraction"}
    # pca_fit_samples: documented, add with +; the PCA refit only concerns the glass-box net
    assert _fields(schemas.GlassBoxModelConfig) - model == {"pca_refit_fraction"}
    assert _fields(schemas.GlassBoxModelConfig) <= _params(ClassificationModule)


def test_every_schema_key_has_a_meaning():
    for _, schema, *_ in docs.SECTIONS:
        missing = [k for k, _, f in docs.schema_keys(schema) if not f.metadata.get("help")]
        assert not missing, (schema.__name__, missing)


# --------------------------------------------------------------------------- composition
@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("data.rotation.mode=spin", "data.rotation.mode", r"expected one of \[random, fixed\]"),
        ("data.rotation.split=x", "data.rotation.split", r"one of \[none, train, test, both\]"),
        ("model.net.gspace=hex", "model.net.gspace", r"expected one of \[rot, fliprot\]"),
        ("model.net.stem=big", None, r"Key 'stem' not in 'GlassBoxNetConfig'"),
        ("seed=abc", "seed", r"'abc' of type 'str' could not be converted to Integer"),
        ("test=maybe", "test", r"'maybe' is not a valid bool"),
        ("trainer.max_epochs=abc", "trainer.max_epochs", r"could not be converted to Integer"),
        ("model.optimizer.lr=fast", "model.optimizer.lr", r"could not be converted to Float"),
        ("data.widht=3", "data.widht", r"Key 'widht' not in 'DataConfig' \(keys: name, root"),
        ("data.classes=[3,x]", "data.classes[1]", r"could not be converted to Integer"),
        (
            "callbacks.equivariance.num_images=many",
            "callbacks.equivariance.num_images",
            r"could not be converted to Integer",
        ),
        ("rotated_test.angles=[x]", "rotated_test.angles[0]", r"converted to Float"),
    ],
)
def test_composition_rejects_types_keys_and_enum_values_in_one_line(
    tmp_path, override, key, message
):
    with pytest.raises(ConfigCompositionException) as caught:
        compose("train", [*FAST, override], tmp_path)
    err = composition_error(caught.value)
    assert isinstance(err, ConfigError)
    line = str(err)
    assert "\n" not in line and "full_key" not in line and "object_type" not in line, line
    assert line.startswith(f"{key or override.split('=')[0]}: "), line
    assert re.search(message, line), line
    with pytest.raises(SystemExit) as exited, one_line_errors():
        raise caught.value
    assert exited.value.code == f"error: {line}"


def test_alexnet_schema_and_evaluate_schema(tmp_path):
    with pytest.raises(ConfigCompositionException) as caught:
        compose("train", [*FAST, "model=alexnet", "model.net.stem=huge"], tmp_path)
    assert str(composition_error(caught.value)).startswith(
        "model.net.stem: Invalid value 'huge', expected one of [small, imagenet]"
    )
    with pytest.raises(ConfigCompositionException) as caught:
        compose("evaluate", ["ckpt_path=x.ckpt", "rotated_test.random=often"], tmp_path)
    assert str(composition_error(caught.value)).startswith("rotated_test.random: ")
    cfg = compose("evaluate", ["ckpt_path=x.ckpt", "data_overrides={batch_size: 8}"], tmp_path)
    assert cfg.data_overrides.batch_size == 8


def test_open_groups_take_any_argument_but_type_the_known_keys(tmp_path):
    cfg = compose(
        "train",
        [
            *FAST,
            "trainer.accumulate_grad_batches=2",  # not in the schema: no + needed (open)
            "model.optimizer._target_=torch.optim.SGD",
            "+model.optimizer.momentum=0.9",
            "model.scheduler=null",
            "+model.pca_fit_samples=64",
        ],
        tmp_path,
    )
    assert cfg.trainer.accumulate_grad_batches == 2 and cfg.model.optimizer.momentum == 0.9
    assert isinstance(cfg.trainer.max_epochs, int) and cfg.model.scheduler is None
    from glassbox import pipeline

    dm = pipeline.build_datamodule(cfg)
    module = pipeline.build_module(cfg, dm)
    assert type(module.optimizer_factory(params=module.parameters())).__name__ == "SGD"
    assert module.pca_fit_samples == 64


def test_enums_reach_the_code_as_plain_strings(tmp_path):
    from glassbox import pipeline

    cfg = compose(
        "train", [*FAST, "data.rotation.split=test", "model.net.gspace=fliprot"], tmp_path
    )
    dm = pipeline.build_datamodule(cfg)
    assert dm.rotation["split"] == "test" and f"{dm.rotation['split']}" == "test"
    module = pipeline.build_module(cfg, dm)
    stored = module.run_config
    assert stored["data"]["rotation"] == {"split": "test", "mode": "random", "angle": 0.0}
    assert type(stored["model"]["net"]["gspace"]) is str  # checkpoints hold plain containers


# --------------------------------------------------------------------------- start-up ranges
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.batch_size=0",
            "data.batch_size=0 is not a positive integer; set e.g. data.batch_size=64",
        ),
        (
            "data.image_size=-32",
            "data.image_size=-32 is not a positive integer; set e.g. data.image_size=32",
        ),
        (
            "data.val_fraction=0",
            "data.val_fraction=0.0 must be in (0, 1); set e.g. data.val_fraction=0.1",
        ),
        (
            "model.optimizer.lr=0",
            "model.optimizer.lr=0.0 must be > 0; set e.g. model.optimizer.lr=0.001",
        ),
        (
            "model.net.widths=[8,0,32]",
            "model.net.widths=[8,0,32] has the entry 0 that is not a positive integer; "
            "set e.g. model.net.widths=[8,16,32]",
        ),
        (
            "model.net.variance_threshold=1.5",
            "model.net.variance_threshold=1.5 must be in (0, 1]; set e.g. model.net.variance_threshold=null",
        ),
        (
            "callbacks.equivariance.fit_fraction=1",
            "callbacks.equivariance.fit_fraction=1.0 must be in (0, 1); "
            "set e.g. callbacks.equivariance.fit_fraction=0.5",
        ),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is not a positive integer"),
    ],
)
def test_ranges_are_checked_once_at_start_up(tmp_path, override, message):
    cfg = compose("train", [*FAST, override], tmp_path)
    with pytest.raises(ConfigError) as caught:
        checks.check_ranges(cfg)
    assert str(caught.value).startswith(message), str(caught.value)


def test_default_configs_are_in_range(tmp_path):
    checks.check_ranges(compose("train", [], tmp_path))
    checks.check_ranges(
        compose("train", ["callbacks=[default,separability,interpretation]"], tmp_path)
    )
    checks.check_ranges(compose("train", ["model=alexnet", "data=cifar10"], tmp_path))
    checks.check_ranges(compose("evaluate", ["ckpt_path=x"], tmp_path))


# --------------------------------------------------------------------------- build-time contract
def test_build_errors_name_the_node_and_the_cause():
    from hydra.errors import InstantiationException

    wrapped = InstantiationException(
        "Error in call to target 'torch.optim.adamw.AdamW':\nValueError('Invalid learning rate: -1')"
        "\nfull_key: model.optimizer"
    )
    wrapped.__cause__ = ValueError("Invalid learning rate: -1")
    assert str(build_error("model", wrapped)) == "model.optimizer: Invalid learning rate: -1"
    assert (
        str(build_error("trainer", AssertionError())) == "trainer: AssertionError: AssertionError"
    )
    assert (
        str(build_error("data", ConfigError("data.batch_size=0 is bad")))
        == "data.batch_size=0 is bad"
    )
    assert str(build_error("x", RuntimeError("a\n  b"))) == "x: RuntimeError: a b"


def test_a_run_directory_with_only_hydra_files_is_removed_after_a_user_error(tmp_path):
    from glassbox import pipeline

    run = tmp_path / "run"
    cfg = compose("train", [*FAST, "callbacks.equivariance.group=Z4"], run)
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / ".hydra" / name).write_text("x: 1\n")
    (run / "train.log").write_text("")
    with pytest.raises(SystemExit, match=r"^error: callbacks.equivariance: unknown group 'Z4'"):
        pipeline.run(cfg, pipeline.train)
    assert not run.exists()
    # a directory that holds anything else (an earlier run) stays as it is
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit):
        pipeline.run(cfg, pipeline.train)
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "metrics.json"]


# --------------------------------------------------------------------------- --help and docs
def test_help_lists_every_group_with_its_options_and_points_to_the_docs(tmp_path):
    compose("train", [], tmp_path)  # sets HydraConfig as the entry point does
    text = cli.config_help("train")
    for group in ("data", "model", "callbacks", "logger", "trainer", "experiment", "debug"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"  {group}: "))
        assert cli.GROUPS[group] in line
        for option in (ROOT / "conf" / group).glob("*.yaml"):
            assert re.search(rf"^\s+{option.stem}\s+\S", text, re.M), (group, option.stem)
    assert "digits         scikit-learn's 1,797 real 8×8 handwritten digits" in text
    assert "glassbox  The three-layer glass-box model" in text
    assert "DESIGN" not in text  # the help cites the project's own docs only
    assert "docs/configuration.md" in text
    hydra_cfg = (ROOT / "conf" / "hydra" / "default.yaml").read_text()
    assert "template: ${gb.help:${hydra.job.config_name}}" in hydra_cfg


def test_configuration_docs_are_current_and_complete():
    page = (ROOT / "docs" / "configuration.md").read_text()
    generated = docs.generate()
    assert page == generated, (
        "docs/configuration.md is stale: python -m glassbox.config.docs > docs/configuration.md"
    )
    keys = [
        k for _, schema, *_, skip in docs.SECTIONS for k, *_ in docs.schema_keys(schema, skip=skip)
    ]
    keys += [k for s in schemas.analysis_callbacks().values() for k, *_ in docs.schema_keys(s)]
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert not missing and len(keys) > 100, missing
    readme = (ROOT / "README.md").read_text()
    assert "docs/configuration.md" in readme


# --------------------------------------------------------------------------- the entry point
def test_train_py_prints_one_line_for_a_composition_error_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_script("train.py", "seed=abc", f"hydra.run.dir={run_dir}", timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        "error: seed: Value 'abc' of type 'str' could not be converted to Integer"
    ), proc.stderr
    assert not run_dir.exists()


BAD_CONFIGS = [
    (
        "trainer.max_epochs=abc",
        "error: trainer.max_epochs: Value 'abc' of type 'str' could not be converted to Integer",
    ),
    ("seed=abc", "error: seed: Value 'abc' of type 'str' could not be converted to Integer"),
    (
        "data.rotation.mode=spin",
        "error: data.rotation.mode: Invalid value 'spin', expected one of [random, fixed]",
    ),
    (
        "model.optimizer.lr=-1",
        "error: model.optimizer.lr=-1.0 must be > 0; set e.g. model.optimizer.lr=0.001",
    ),
    ("callbacks.equivariance.group=Z4", "error: callbacks.equivariance: unknown group 'Z4'"),
    (
        "callbacks.equivariance.layers=[nope]",
        "error: callbacks.equivariance: unknown layer name(s) ['nope']",
    ),
    ("trainer=gpu", "error: trainer: "),
]


@pytest.mark.slow
@pytest.mark.parametrize(("override", "line"), BAD_CONFIGS, ids=[o for o, _ in BAD_CONFIGS])
def test_train_py_bad_configs_end_in_one_line_and_leave_no_run_directory(tmp_path, override, line):
    import torch

    if override == "trainer=gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    run_dir = tmp_path / "run"
    proc = run_script("train.py", override, "logger=csv", f"hydra.run.dir={run_dir}", timeout=300)
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(line), proc.stderr
    assert "Traceback" not in proc.stderr and "Error in call to target" not in proc.stderr
    assert not run_dir.exists(), sorted(p.name for p in run_dir.rglob("*"))
