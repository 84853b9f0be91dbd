"""Experiment configs: each composes with its sweep and runs end to end on tiny settings."""

from __future__ import annotations

import json

import pytest

from conftest import CONF
from glassbox import pipeline

EXPERIMENTS = ["glassbox_vs_alexnet", "rotation_generalization", "equivariance", "interpretation"]
# Small nets: a C4 glass-box model (exactly invariant to 90° rotations) and a narrow AlexNet.
TINY_GLASSBOX = [
    "model.net.widths=[2,2,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=4",
    "model.net.classifier_hidden=[8]",
]
TINY_ALEXNET = ["model=alexnet", "model.net.width_mult=0.125", "model.net.hidden=16"]


def hydra_node(overrides: list[str]):
    """The composed ``hydra`` node (sweeper, launcher) of ``train.py`` with ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from glassbox.utils import resolvers

    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    return cfg


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_sweeps_both_models_over_seeds(name):
    cfg = hydra_node([f"experiment={name}"])
    params = cfg.hydra.sweeper.params
    assert params["model"].split(",") == ["glassbox", "alexnet"]
    assert len(params["seed"].split(",")) >= 3
    assert name in cfg.tags
    assert cfg.data.rotation.split == "none"  # every experiment trains upright


def test_unknown_experiment_lists_the_options():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        hydra_node(["experiment=rotation"])
    msg = str(err.value)
    assert "Could not find 'experiment/rotation'" in msg
    for option in sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")):
        assert f"\t{option}\n" in msg + "\n"


def test_glassbox_vs_alexnet_runs(cfg_train, tmp_path):
    cfg = cfg_train("experiment=glassbox_vs_alexnet", *TINY_ALEXNET, "trainer.limit_test_batches=1")
    metrics = pipeline.train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model"] == "alexnet"
    for prefix in ("test", "test_rotated", "test_rot90", "test_rot180", "test_rot270"):
        assert 0.0 <= metrics[f"{prefix}/acc"] <= 1.0
        assert saved["metrics"][f"{prefix}/acc"] == pytest.approx(metrics[f"{prefix}/acc"])


def test_rotation_generalization_curve_is_flat_at_right_angles_for_c4(cfg_train, tmp_path):
    cfg = cfg_train(
        "experiment=rotation_generalization", *TINY_GLASSBOX, "trainer.limit_test_batches=1"
    )
    assert list(cfg.rotated_test.angles) == list(range(0, 361, 15))
    # every 15° is 25 test passes: a subset keeps the test fast
    cfg.rotated_test.angles = [0, 45, 90, 270, 360]
    metrics = pipeline.train(cfg)
    accs = {a: metrics[f"test_rot{a:g}/acc"] for a in cfg.rotated_test.angles}  # angles are floats
    assert all(0.0 <= v <= 1.0 for v in accs.values())
    # A C4-invariant model sees the same images at 0/90/270/360°: identical accuracy, equal to
    # the upright test (0° is the test split itself).
    for a in (0, 90, 270, 360):
        assert accs[a] == pytest.approx(metrics["test/acc"], abs=1e-6)
    # the headline: mean over one turn, 360° being 0° again
    assert metrics["test_rot_mean/acc"] == pytest.approx(
        (accs[0] + accs[45] + accs[90] + accs[270]) / 4
    )
    assert set(json.loads((tmp_path / "metrics.json").read_text())["metrics"]) >= {
        f"test_rot{a:g}/acc" for a in accs
    }


def test_equivariance_experiment_reports_exact_invariance(cfg_train, tmp_path):
    cfg = cfg_train(
        "experiment=equivariance",
        *TINY_GLASSBOX,
        "trainer.limit_test_batches=1",
        "callbacks.equivariance.num_images=16",
        "callbacks.equivariance.measures=[invariance,equivariance]",
    )
    assert cfg.callbacks.equivariance.at_test_end and not cfg.rotated_test.angles
    pipeline.train(cfg)
    out = tmp_path / "equivariance" / "test"
    assert (out / "equivariance.csv").is_file() and (out / "equivariance.png").is_file()
    records = json.loads((out / "equivariance.json").read_text())
    worst = {}
    for r in records:
        key = (r["layer"], r["measure"])
        worst[key] = max(worst.get(key, 0.0), float(r["value"]))
    # C4 glass-box: the regular fields transform exactly by ρ(g) and the logits are invariant
    # under 90° rotations, up to float round-off.
    blocks = [k for k in worst if k[0].startswith("representation.") and k[1] == "equivariance"]
    assert len(blocks) == 3
    assert max(worst[k] for k in blocks) < 1e-5
    assert worst[("output", "invariance")] < 1e-4


def test_interpretation_experiment_writes_interpretations(cfg_train, tmp_path):
    cfg = cfg_train(
        "experiment=interpretation",
        *TINY_GLASSBOX,
        # a binary task trained for a few more steps, so that both classes get predicted
        "data.classes=[0,1]",
        "trainer.limit_train_batches=12",
        "model.optimizer.lr=0.02",
        "trainer.limit_test_batches=1",
        "callbacks.interpretation.num_images=8",
        "callbacks.interpretation.reuse_k=4",
        "callbacks.interpretation.road_percentiles=null",
        "callbacks.interpretation.num_reference=64",
        "callbacks.interpretation.num_candidates=8",
        "callbacks.interpretation.interpretations_per_class=1",
        "callbacks.interpretation.baselines=[]",
        "callbacks.interpretation.max_galleries=1",
    )
    assert cfg.callbacks.interpretation.at_test_end
    pipeline.train(cfg)
    out = tmp_path / "interpretation" / "test"
    report = json.loads((out / "interpretations.json").read_text())
    assert report["layer"] == "group_pool" and report["num_reference"] == 64
    interps = report["interpretations"]
    assert {i["class"] for i in interps} == {0, 1}  # one per predicted class
    for i in interps:
        # SCSC's constraint: at most delta covered images of another predicted class
        assert i["covered_other"] <= i["delta"]
        assert 0.0 < i["coverage"] <= 1.0 and i["covered_same"] <= i["class_size"]
    ad = json.loads((out / "evaluation.json").read_text())["methods"]["RI"]["AD"]
    assert 0.0 <= ad <= 100.0
