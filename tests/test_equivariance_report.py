"""Records → CSV/JSON tables and the error-vs-depth plot (one model, two overlaid)."""

import json
import math

import pandas as pd
import torch
from torch import nn

from glassbox.equivariance import measure_layerwise, plot_depth, save_records, summary_table


def _cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def test_tables_and_plots(tmp_path):
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = measure_layerwise(
        _cnn(0),
        x,
        "C4",
        measures=["invariance", "spatial", "best_fit", "consistency", "lie_derivative"],
    )
    b = measure_layerwise(_cnn(1), x, "C4")

    paths = save_records(a, tmp_path, stem="eq")
    frame = pd.read_csv(paths["csv"])
    assert len(frame) == len(a)
    assert set(frame["measure"]) == {
        "invariance",
        "spatial",
        "best_fit",
        "consistency",
        "lie_derivative",
    }
    rows = json.loads(paths["json"].read_text())  # strict JSON: the Lie record's NaN angle is null
    assert len(rows) == len(a) and any(r["angle"] is None for r in rows)
    lie = [r for r in rows if r["measure"] == "lie_derivative"]
    assert all(r["element"] == "d/dtheta" and r["value"] > 0 for r in lie)

    summary = pd.read_csv(paths["summary"])
    assert list(summary["layer"]) == ["0", "2", "3", "4", "output"]  # depth order
    conv = summary[summary["layer"] == "0"].iloc[0]
    mean_spatial = sum(r.value for r in a if r.layer == "0" and r.measure == "spatial") / 3
    assert math.isclose(conv["spatial"], mean_spatial, rel_tol=1e-9)

    png = plot_depth(a, tmp_path / "one.png")
    overlay = plot_depth({"net A": a, "net B": b}, tmp_path / "two.png", title="A vs B")
    for p in (png, overlay):
        assert p.stat().st_size > 5000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = summary_table({"net A": a, "net B": b})
    assert set(both["model"]) == {"net A", "net B"}
    assert {r.model for r in a} == {""}  # the mapping form does not mutate the caller's records


def test_interpolated_elements_get_their_own_columns():
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    recs = measure_layerwise(_cnn(0), x, "C8", exact="interpolate", measures=["spatial"])
    table = summary_table(recs)
    assert {"spatial", "spatial (interpolated)"} <= set(table.columns)
    exact_mean = sum(r.value for r in recs if r.layer == "0" and r.exact) / 3  # 90°, 180°, 270°
    assert math.isclose(
        table.loc[table["layer"] == "0", "spatial"].item(), exact_mean, rel_tol=1e-9
    )
