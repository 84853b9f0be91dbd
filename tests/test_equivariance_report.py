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


def test_a_measure_that_does_not_apply_reads_n_a_in_the_files_and_the_run_report(tmp_path):
    """The Lie derivative of regular C4 fields is NaN with a note in the records and the
    summary, and "n/a" in the run report's table (not a number, not a blank)."""
    from e2cnn import gspaces
    from e2cnn import nn as enn

    from glassbox.reporting.run_report import build_run_report

    gs = gspaces.Rot2dOnR2(4)
    t_in = enn.FieldType(gs, [gs.trivial_repr])
    t_reg = enn.FieldType(gs, 2 * [gs.regular_repr])
    torch.manual_seed(0)
    net = enn.SequentialModule(enn.R2Conv(t_in, t_reg, 3, padding=1), enn.GroupPooling(t_reg))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    records = measure_layerwise(
        net.eval(), x, "C4", layers=["0", "1"], measures=["invariance", "lie_derivative"]
    )
    run = tmp_path / "run"
    paths = save_records(records, run / "equivariance" / "test")
    rows = json.loads(paths["json"].read_text())
    (lie,) = [r for r in rows if r["layer"] == "0" and r["measure"] == "lie_derivative"]
    assert lie["value"] is None and lie["note"].startswith(
        "lie_derivative n/a: regular fields of C4"
    )
    summary = pd.read_csv(paths["summary"], dtype={"layer": str}).set_index("layer")
    assert math.isnan(summary.loc["0", "lie_derivative"]) and summary.loc["1", "lie_derivative"] > 0
    assert summary.loc["0", "note"] == lie["note"]

    (run / "metrics.json").write_text(
        json.dumps({"task": "evaluate", "model": "glassbox", "data": "digits", "metrics": {}})
    )
    html = build_run_report(run).read_text()
    assert ">n/a</td>" in html and "a discrete group has no continuous rotation" in html
    assert ">nan<" not in html.lower()  # no NaN shown as a number
