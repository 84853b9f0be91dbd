"""Report writers: CSV/JSON/markdown round trip, merged runs, plots, the comparison CLI."""

from __future__ import annotations

import json
import math

import pytest

from glassbox.reporting.compare import compare_runs, main
from glassbox.reporting.figures import plot_explained_variance, plot_probes, plot_separability
from glassbox.reporting.tables import markdown_table, merge_tables, read_table, write_table

PIXELS = {
    "model": "pixels",
    "layer": "pixels",
    "dim": 64,
    "samples": 30,
    "intra": 2.0,
    "inter": 3.0,
    "ratio": 1.5,
    "fisher": 0.9,
}


def sep_rows(model: str, scale: float) -> list[dict]:
    rows = [dict(PIXELS)]
    for i, layer in enumerate(("a", "b")):
        rows.append(
            {
                **PIXELS,
                "model": model,
                "layer": layer,
                "dim": 8,
                "ratio": scale * (i + 2),
                "fisher": scale * (i + 1),
            }
        )
    return rows


def probe_rows(model: str) -> list[dict]:
    return [
        {
            "model": m,
            "layer": layer,
            "dim": 8,
            "probe_dim": 8,
            "classifier": c,
            "train_acc": 1.0,
            "test_acc": 0.5 + 0.1 * j,
        }
        for m, layer in (("pixels", "pixels"), (model, "a"))
        for j, c in enumerate(("logreg", "svm", "lda"))
    ]


def test_write_read_round_trip_and_markdown(tmp_path):
    rows = sep_rows("glassbox", 1.0) + [
        {**PIXELS, "model": "x", "layer": "c", "ratio": float("inf"), "fisher": float("nan")}
    ]
    paths = write_table(rows, tmp_path, "separability")
    assert {p.name for p in paths.values()} == {
        "separability.csv",
        "separability.json",
        "separability.md",
    }
    back = read_table(paths["csv"])
    assert back[:3] == rows[:3]  # ints stay ints, floats floats
    assert math.isinf(back[3]["ratio"]) and math.isnan(back[3]["fisher"])
    assert read_table(paths["json"])[:3] == rows[:3]
    md = paths["md"].read_text().splitlines()
    assert md[0] == "| model | layer | dim | samples | intra | inter | ratio | fisher |"
    assert md[2] == "| pixels | pixels | 64 | 30 | 2 | 3 | 1.5 | 0.9 |"
    assert md[5].endswith("| inf |  |")  # infinity shown, NaN (undefined) blank
    assert markdown_table([{"a": 1.23456}], floatfmt=".2f").splitlines()[2] == "| 1.23 |"
    with pytest.raises(ValueError, match="no rows"):
        write_table([], tmp_path, "empty")


def test_merge_keeps_one_pixel_baseline():
    merged = merge_tables([sep_rows("glassbox", 1.0), sep_rows("alexnet", 0.5)])
    assert [(r["model"], r["layer"]) for r in merged] == [
        ("pixels", "pixels"), ("glassbox", "a"), ("glassbox", "b"), ("alexnet", "a"), ("alexnet", "b"),
    ]  # fmt: skip


def test_plots_are_written(tmp_path):
    rows = merge_tables([sep_rows("glassbox", 1.0), sep_rows("alexnet", 0.5)])
    for path in (
        plot_separability(rows, tmp_path / "sep.png"),
        plot_probes(probe_rows("glassbox"), tmp_path / "probes.png"),
        plot_explained_variance(
            {
                "explained_variance_ratio": [0.6, 0.3, 0.1],
                "cumulative": [0.6, 0.9, 1.0],
                "threshold": 0.9,
                "threshold_dim": 2,
                "reduced_dim": 1,
                "variance_kept": 0.55,
            },
            tmp_path / "pca.png",
        ),  # fmt: skip
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="no separability rows"):
        plot_separability([], tmp_path / "x.png")


def test_compare_runs_merges_two_run_directories(tmp_path, capsys):
    for model, scale in (("glassbox", 1.0), ("alexnet", 0.5)):
        out = tmp_path / model / "separability" / "test"
        write_table(sep_rows(model, scale), out, "separability")
        write_table(probe_rows(model), out, "probes")
    main([str(tmp_path / "glassbox"), str(tmp_path / "alexnet"), "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    assert "separability.png" in printed and "probes.png" in printed
    merged = json.loads((tmp_path / "cmp" / "separability.json").read_text())
    assert [r["model"] for r in merged].count("pixels") == 1 and len(merged) == 5
    probes = read_table(tmp_path / "cmp" / "probes.csv")
    assert len(probes) == 9  # pixels (3 classifiers, once) + a layer per model
    with pytest.raises(FileNotFoundError, match="no separability.csv"):
        compare_runs([tmp_path / "nothing"], tmp_path / "cmp2")
