"""Analytical classifiers (logistic regression, linear SVM, LDA) on frozen features."""

from __future__ import annotations

import pytest
import torch

from glassbox.analysis.classifiers import CLASSIFIERS, probe_accuracy, probe_table


def clusters(n_per_class: int, k: int = 3, d: int = 5, spread: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(k, d) * 4.0
    y = torch.arange(k).repeat_interleave(n_per_class)
    return centers[y] + spread * torch.randn(len(y), d, generator=g), y


def test_separable_clusters_are_classified_perfectly():
    xtr, ytr = clusters(20)
    xte, yte = clusters(10, seed=1)
    accs = probe_accuracy(xtr, ytr, xte, yte)
    assert set(accs) == set(CLASSIFIERS)
    for r in accs.values():
        assert r["train_acc"] == 1.0 and r["test_acc"] == 1.0 and r["probe_dim"] == 5


def test_random_labels_score_near_chance_on_test():
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(300, 4, generator=g), torch.randn(600, 4, generator=g)
    ytr, yte = torch.randint(0, 2, (300,), generator=g), torch.randint(0, 2, (600,), generator=g)
    for r in probe_accuracy(xtr, ytr, xte, yte).values():
        assert 0.4 < r["test_acc"] < 0.6


def test_wide_features_are_pca_projected_without_loss_for_linear_probes():
    # a class signal in 2 of 3000 dims, 60 training samples: PCA to 64 axes keeps the data span
    xtr, ytr = clusters(20, d=3000, spread=0.2)
    xte, yte = clusters(10, d=3000, spread=0.2, seed=1)
    accs = probe_accuracy(
        xtr.reshape(60, 3, 10, 100), ytr, xte.reshape(30, 3, 10, 100), yte, max_features=64
    )
    for r in accs.values():
        assert r["probe_dim"] == 59  # the span of 60 centred samples
        assert r["test_acc"] == 1.0


def test_probe_table_rows():
    xtr, ytr = clusters(10)
    xte, yte = clusters(5, seed=2)
    rows = probe_table(
        {"pixels": xtr, "z": xtr[:, :2]},
        ytr,
        {"pixels": xte, "z": xte[:, :2]},
        yte,
        ["lda"],
        model="m",
    )
    assert [(r["model"], r["layer"], r["classifier"], r["dim"]) for r in rows] == [
        ("pixels", "pixels", "lda", 5),
        ("m", "z", "lda", 2),
    ]
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows)


def test_bad_input():
    xtr, ytr = clusters(5)
    with pytest.raises(ValueError, match="unknown classifier 'knn'"):
        probe_accuracy(xtr, ytr, xtr, ytr, ["knn"])
    with pytest.raises(ValueError, match="at least two"):
        probe_accuracy(xtr, torch.zeros_like(ytr), xtr, ytr)
    with pytest.raises(ValueError, match="differ in size"):
        probe_accuracy(xtr, ytr, xtr[:, :3], ytr)
    with pytest.raises(ValueError, match="flatten to 2-D"):
        probe_accuracy(xtr[:, 0], ytr, xtr, ytr)
    with pytest.raises(ValueError, match="same layers"):
        probe_table({"a": xtr}, ytr, {"b": xtr}, ytr)
