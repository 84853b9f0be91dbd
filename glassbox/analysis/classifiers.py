"""Analytical classifiers on frozen representations (the paper's sensitivity assessment).

Logistic regression, a linear SVM and LDA (scikit-learn) are trained on the training
features of one representation and scored on the test features. A representation whose
classes a linear model separates well scores high; comparing pixels, glass-box layers and
AlexNet layers shows where class information becomes linearly available.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from glassbox.analysis.layers import INPUT
from glassbox.analysis.pca import fit_pca
from glassbox.errors import AnalysisInputError
from glassbox.metrics.separability import check_labels, flatten_features

CLASSIFIERS = ("logreg", "svm", "lda")


def make_classifier(name: str, seed: int = 0, max_iter: int = 2000):
    """A scikit-learn estimator: ``logreg``/``svm`` standardise first; ``lda`` is scale-free."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if name == "logreg":
        return make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed)
        )
    if name == "svm":
        # tol 1e-3 (sklearn: 1e-4) makes wide layers several times faster for the same accuracy
        return make_pipeline(
            StandardScaler(), LinearSVC(tol=1e-3, max_iter=max_iter, random_state=seed)
        )
    if name == "lda":
        return LinearDiscriminantAnalysis()
    raise AnalysisInputError(f"unknown classifier {name!r}; use some of {', '.join(CLASSIFIERS)}")


def _check_split(features: Tensor, labels: Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = flatten_features(features)
    y = check_labels(labels, x.shape[0])
    return x.detach().float().cpu().numpy(), y.cpu().numpy()


def probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    classifiers: Sequence[str] = CLASSIFIERS,
    *,
    max_features: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Train each classifier on one representation; ``{name: {train_acc, test_acc, probe_dim}}``.

    Args:
        train_features, test_features: (N, ...) features of the same layer (flattened).
        train_labels, test_labels: integer labels (N,).
        classifiers: any of ``logreg``, ``svm``, ``lda``.
        max_features: if the layer is wider, PCA fitted on the training features first
            projects both splits onto that many axes (for N ≤ max_features this keeps the
            whole span of the centred training data, so linear probes lose nothing).
        seed: random state of the solvers.
    """
    for name in classifiers:
        make_classifier(name)  # unknown names fail before any fitting
    xtr, ytr = _check_split(train_features, train_labels)
    xte, yte = _check_split(test_features, test_labels)
    if xtr.shape[1] != xte.shape[1]:
        raise AnalysisInputError(
            f"train and test features differ in size ({xtr.shape[1]} vs {xte.shape[1]}): take both from the same layer"
        )
    if np.unique(ytr).size < 2:
        raise AnalysisInputError(
            f"the training features hold {np.unique(ytr).size} class(es); a classifier needs at least two"
        )
    if max_features is not None and xtr.shape[1] > max_features:
        pca = fit_pca(torch.from_numpy(xtr), dim=max_features)
        xtr = pca.transform(torch.from_numpy(xtr)).numpy()
        xte = pca.transform(torch.from_numpy(xte)).numpy()
    results: dict[str, dict[str, float]] = {}
    for name in classifiers:
        clf = make_classifier(name, seed)
        with warnings.catch_warnings():
            # max_iter bounds the cost; a not-quite-converged linear probe still scores fairly,
            # and LDA's collinearity warning is expected for low-rank (ReLU, pooled) features.
            warnings.simplefilter("ignore")
            clf.fit(xtr, ytr)
            results[name] = {
                "train_acc": float((clf.predict(xtr) == ytr).mean()),
                "test_acc": float((clf.predict(xte) == yte).mean()),
                "probe_dim": int(xtr.shape[1]),
            }
    return results


def probe_table(
    train_features: Mapping[str, Tensor],
    train_labels: Tensor,
    test_features: Mapping[str, Tensor],
    test_labels: Tensor,
    classifiers: Sequence[str] = CLASSIFIERS,
    *,
    model: str = "",
    max_features: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Rows ``{model, layer, dim, probe_dim, classifier, train_acc, test_acc}``, one per layer
    and classifier; ``pixels`` rows get ``model="pixels"``."""
    missing = set(train_features) ^ set(test_features)
    if missing:
        raise AnalysisInputError(
            f"train and test features must name the same layers; only in one: {sorted(missing)}"
        )
    rows = []
    for layer, ftr in train_features.items():
        accs = probe_accuracy(
            ftr,
            train_labels,
            test_features[layer],
            test_labels,
            classifiers,
            max_features=max_features,
            seed=seed,
        )
        dim = int(flatten_features(ftr).shape[1])
        for clf, r in accs.items():
            rows.append(
                {
                    "model": INPUT if layer == INPUT else model,
                    "layer": layer,
                    "dim": dim,
                    "probe_dim": r["probe_dim"],
                    "classifier": clf,
                    "train_acc": r["train_acc"],
                    "test_acc": r["test_acc"],
                }
            )
    return rows
