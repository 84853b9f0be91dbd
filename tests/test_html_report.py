"""The run and sweep reports (report.html): every section present, every image they reference
exists, the numbers shown equal metrics.json; the history callback; the pipeline hook."""

from __future__ import annotations

import json
import logging
import statistics
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from glassbox import report
from glassbox.callbacks.history import HistoryCallback, read_history
from glassbox.reporting import html as H
from glassbox.reporting.run_report import SECTIONS, build_run_report
from glassbox.reporting.sweep_report import SWEEP_SECTIONS


# --------------------------------------------------------------------------- helpers
def png_bytes(w: int = 4, h: int = 3) -> bytes:
    """A valid RGB PNG of w×h grey pixels (no plotting library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\x80" * (3 * w) for _ in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack("!IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class Parsed(HTMLParser):
    """Section ids, image sources, links, and the (data-key, data-value, text) of each number."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections, self.images, self.links, self.numbers, self.tags = [], [], [], [], set()
        self._open: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.images.append(a["src"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if "data-key" in a:
            value = float(a["data-value"]) if "data-value" in a else None
            self._open.append({"key": a["data-key"], "value": value, "text": ""})
        elif tag in ("td", "div") and self._open:
            self._open.append(None)

    def handle_data(self, data):
        if self._open and self._open[-1] is not None:
            self._open[-1]["text"] += data

    def handle_endtag(self, tag):
        if tag in ("td", "div") and self._open:
            item = self._open.pop()
            if item is not None:
                self.numbers.append(item)


ACC = {1: (0.91, 0.93), 2: (0.81, 0.85)}  # seed → (glassbox, alexnet) test/acc
EQ_LAYERS = [
    ("block1", 0.9, 1e-7),
    ("block2", 0.8, 2e-7),
    ("pool", 1e-7, None),
    ("output", 2e-7, None),
]


def fake_run(run: Path, model: str = "glassbox", seed: int = 1, scale: float = 1.0) -> dict:
    """A run directory as train.py leaves it, every analysis present; returns metrics.json."""
    (run / ".hydra").mkdir(parents=True)
    cfg = {
        "task_name": "train",
        "seed": seed,
        "model": {
            "name": model,
            "net": {"_target_": f"nets.{model}"},
            "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.003},
        },
        "data": {"name": "digits", "batch_size": 64},
        "trainer": {"max_epochs": 3, "accelerator": "cpu"},
        "callbacks": {
            "history": {"_target_": "glassbox.callbacks.history.HistoryCallback"},
            "equivariance": {"_target_": "x"},
            "separability": {"_target_": "x"},
            "interpretation": {"_target_": "x"},
        },
        "logger": {"csv": {"_target_": "x"}},
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"model={model}", f"seed={seed}"])
    )
    acc = ACC[seed][0 if model == "glassbox" else 1]
    metrics = {
        "val/acc": acc - 0.01,
        "val/loss": 0.4,
        "train/loss": 0.3,
        "test/acc": acc,
        "test/f1": acc - 0.02,
        "test/loss": 0.35 * scale,
        "test_rot0/acc": acc,
        "test_rot90/acc": acc - 0.1,
        "test/confusion_matrix": [[5, 1, 0], [0, 6, 1], [1, 0, 7]],
        "equivariance/block1/invariance": 0.9 * scale * (1 + 0.1 * 3),  # = equivariance/test/
        "separability/block1/fisher": 1.5 * scale,
    }
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "task": "train",
                "model": model,
                "data": "digits",
                "best_ckpt": str(run / "checkpoints/epoch_001.ckpt"),
                "metrics": metrics,
            }
        )
    )
    (run / "history.csv").write_text(
        "epoch,step,train/loss,train/acc,val/loss,val/acc,lr\n"
        "0,10,1.2,0.5,1.1,0.55,0.003\n1,20,0.6,0.8,0.5,0.82,0.0027\n2,30,0.3,0.9,0.4,0.81,0.0024\n"
    )
    for i, tag in enumerate(("epoch000", "epoch001", "epoch002", "test")):
        out = run / "equivariance" / tag
        out.mkdir(parents=True)
        lines = ["model,depth,layer,module,invariance,equivariance,consistency"]
        for d, (layer, inv, eq) in enumerate(EQ_LAYERS):
            f = scale * (1 + 0.1 * i)
            lines.append(
                f"{model},{d},{layer},M,{inv * f},{'' if eq is None else eq * f},{'1.0' if layer == 'output' else ''}"
            )
        (out / "equivariance_summary.csv").write_text("\n".join(lines) + "\n")
        (out / "equivariance.png").write_bytes(png_bytes())
        (out / "status.json").write_text(
            json.dumps(
                {
                    "analysis": "equivariance",
                    "tag": tag,
                    "status": "ran",
                    "scalars": 6,
                    "seconds": 0.5,
                }
            )
        )
    sep = run / "separability" / "test"
    sep.mkdir(parents=True)
    (sep / "separability.csv").write_text(
        "model,layer,dim,samples,intra,inter,ratio,fisher\n"
        f"pixels,input,64,100,1.0,2.0,2.0,{0.5 * scale}\n"
        f"{model},block1,128,100,1.0,3.0,3.0,{1.5 * scale}\n"
        f"{model},output,3,100,0.5,3.0,6.0,{4.0 * scale}\n"
    )
    (sep / "separability.png").write_bytes(png_bytes())
    (sep / "pose.json").write_text(json.dumps({"accuracy_k1": 0.75, "accuracy_k2": 0.875}))
    (sep / "status.json").write_text(
        json.dumps(
            {
                "analysis": "separability",
                "tag": "test",
                "status": "ran",
                "scalars": 8,
                "seconds": 1.0,
            }
        )
    )
    skipped = run / "separability" / "epoch000"
    skipped.mkdir(parents=True)
    (skipped / "status.json").write_text(
        json.dumps(
            {
                "analysis": "separability",
                "tag": "epoch000",
                "status": "skipped",
                "reason": "AnalysisInputError: one predicted class",
            }
        )
    )
    interp = run / "interpretation" / "test"
    interp.mkdir(parents=True)
    (interp / "evaluation.json").write_text(
        json.dumps(
            {
                "keep_fraction": 0.5,
                "layer": "block2",
                "methods": {"RI": {"AD": 12.5, "AI": 40.0}, "GradCAM": {"AD": 20.25, "AI": 30.0}},
            }
        )
    )
    (interp / "interpretations.json").write_text(
        json.dumps(
            {
                "layer": "block2",
                "interpretations": [
                    {"class": 0, "seed_index": 3, "coverage": 0.4, "precision": 1.0}
                ],
            }
        )
    )
    for name in ("gallery_class0_0.png", "gallery_class1_0.png"):
        (interp / name).write_bytes(png_bytes(8, 4))
    (interp / "status.json").write_text(
        json.dumps(
            {
                "analysis": "interpretation",
                "tag": "test",
                "status": "ran",
                "scalars": 3,
                "seconds": 2.0,
            }
        )
    )
    return metrics


def check_page(path: Path, sections) -> Parsed:
    """Every section, every image on disk, nothing fetched from the network, no script."""
    page = Parsed(path.read_text())
    assert page.sections == [s for s, _ in sections]
    assert "script" not in page.tags
    for src in page.images:
        assert not src.startswith(("http:", "https:", "//")), src
        assert (path.parent / src).is_file(), f"{path} shows {src}, which does not exist"
    for href in page.links:
        if not href.startswith("#"):
            assert not href.startswith(("http:", "https:", "//")), href
            assert (path.parent / href).is_file(), f"{path} links {href}, which does not exist"
    return page


# --------------------------------------------------------------------------- run report
def test_run_report_shows_every_section_and_the_numbers_of_metrics_json(tmp_path):
    run = tmp_path / "run"
    metrics = fake_run(run)
    path = build_run_report(run)
    assert path == run / "report.html"
    page = check_page(path, SECTIONS)
    text = path.read_text()

    shown = {n["key"]: n for n in page.numbers}
    for key in ("test/acc", "test/f1", "test/loss", "test_rot90/acc", "val/acc"):
        assert key in shown, key
    for key, n in shown.items():
        if key in metrics:  # every number keyed by a metric equals metrics.json, as shown
            assert n["value"] == metrics[key], key
            assert n["text"] == H.fmt(metrics[key]), key
    # the tested checkpoint's equivariance table, from equivariance/test/
    assert shown["equivariance/block1/invariance"]["value"] == pytest.approx(0.9 * 1.3)
    assert shown["separability/block1/fisher"]["value"] == 1.5
    assert shown["separability/pose/accuracy_k2"]["value"] == 0.875
    # own figures, the analyses' own PNGs, the galleries
    for src in (
        "report_files/confusion_matrix.png",
        "report_files/training_curves.png",
        "report_files/equivariance_epochs.png",
        "equivariance/test/equivariance.png",
        "separability/test/separability.png",
        "interpretation/test/gallery_class0_0.png",
        "interpretation/test/gallery_class1_0.png",
    ):
        assert src in page.images, src
    assert "20.25" in text and "GradCAM" in text  # the AD/AI table
    assert "one predicted class" in text  # a skipped analysis says why
    assert "3 epochs from history.csv" in text
    # the header names the run
    assert "seed 1" in text and "AdamW lr=0.003" in text


def test_run_report_says_why_a_section_is_empty(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"task_name": "evaluate", "callbacks": {}})
    )
    (run / "metrics.json").write_text(
        json.dumps(
            {"task": "evaluate", "model": "alexnet", "data": "digits", "metrics": {"test/acc": 0.5}}
        )
    )
    # an evaluation's CSV logger log: test metrics only, no history to draw
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text("epoch,step,test/acc\n0,0,0.5\n")
    page = check_page(build_run_report(run), SECTIONS)
    text = (run / "report.html").read_text()
    assert "could not be built" not in text
    shown = [n["value"] for n in page.numbers if n["key"] == "test/acc"]
    assert shown == [0.5, 0.5]  # the card and the table
    assert "no training in this run" in text
    assert "the equivariance analysis was not configured" in text
    assert "no test/confusion_matrix in metrics.json" in text
    assert "no pose.json" in text


def test_report_cli_on_a_run_dir_and_on_a_wrong_dir(tmp_path, capsys):
    run = tmp_path / "run"
    fake_run(run)
    assert report.main([str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no metrics.json found under")


# --------------------------------------------------------------------------- sweep report
def test_sweep_report_joins_the_jobs(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    jobs = {}
    for n, (model, seed) in enumerate(
        [("glassbox", 1), ("alexnet", 1), ("glassbox", 2), ("alexnet", 2)]
    ):
        jobs[(model, seed)] = fake_run(
            sweep / str(n), model, seed, scale=1.0 if model == "glassbox" else 2.0
        )
    assert report.main([str(sweep)]) == 0
    assert f"report: {sweep / 'report.html'}" in capsys.readouterr().out
    page = check_page(sweep / "report.html", SWEEP_SECTIONS)
    text = (sweep / "report.html").read_text()
    # links to every job's report, built here since the jobs had none
    assert sorted(h for h in page.links if h.endswith("report.html")) == [
        f"{n}/report.html" for n in range(4)
    ]
    for n in range(4):
        check_page(sweep / str(n) / "report.html", SECTIONS)
    for src in (
        "report_files/accuracy_vs_angle.png",
        "report_files/equivariance_overlay.png",
        "report_files/separability_overlay.png",
    ):
        assert src in page.images, src
    # mean ± std over the seeds, per model, as metrics.json says
    shown = {n["key"]: n["text"] for n in page.numbers}
    for model in ("glassbox", "alexnet"):
        accs = [jobs[(model, s)]["test/acc"] for s in (1, 2)]
        assert (
            shown[f"{model}/test/acc"]
            == f"{H.fmt(statistics.mean(accs))} ± {H.fmt(statistics.stdev(accs))}"
        )
    # each job's own number in the jobs table
    for n, (model, seed) in enumerate(
        [("glassbox", 1), ("alexnet", 1), ("glassbox", 2), ("alexnet", 2)]
    ):
        assert shown[f"multirun/{n}/test/acc"] == H.fmt(jobs[(model, seed)]["test/acc"])
    # the overlay tables: alexnet's separability is twice glassbox's (scale=2) at every layer
    assert "glassbox: per-layer mean ± std over 2 job(s)" in text
    assert "90°" in text


# --------------------------------------------------------------------------- history + pipeline
def _trainer(epoch: int, metrics: dict, lr: float = 0.1):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=epoch,
        global_step=10 * (epoch + 1),
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        optimizers=[opt],
    )


def test_history_callback_writes_one_row_per_epoch_and_continues_after_resume(tmp_path):
    cb = HistoryCallback(str(tmp_path))
    for epoch in range(3):
        cb.on_train_epoch_end(
            _trainer(
                epoch,
                {"train/loss": 1.0 / (epoch + 1), "val/acc": 0.5, "test/acc": 0.9, "lr-SGD": 0.1},
            ),
            None,
        )
    rows = read_history(tmp_path / "history.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert [r["train/loss"] for r in rows] == pytest.approx([1.0, 0.5, 1 / 3])
    assert all(
        r["lr"] == pytest.approx(0.1) and "test/acc" not in r and "lr-SGD" not in r for r in rows
    )
    # a resumed run (new callback, same directory) restarting at epoch 1 replaces epochs >= 1
    cb = HistoryCallback(str(tmp_path))
    cb.on_train_epoch_end(_trainer(1, {"train/loss": 0.25}), None)
    rows = read_history(tmp_path / "history.csv")
    assert [r["epoch"] for r in rows] == [0, 1] and rows[1]["train/loss"] == 0.25


def test_a_failing_report_only_warns(tmp_path, monkeypatch, caplog):
    from glassbox import pipeline
    from glassbox.reporting import run_report

    def broken(run_dir):
        raise OSError("disk full")

    monkeypatch.setattr(run_report, "build_run_report", broken)
    cfg = SimpleNamespace(paths=SimpleNamespace(output_dir=str(tmp_path)))
    with caplog.at_level(logging.WARNING):
        pipeline._write_report(cfg)
    assert "could not build the run report: OSError: disk full" in caplog.text


def test_train_writes_history_and_a_report_matching_metrics_json(cfg_train, tmp_path):
    from glassbox.pipeline import train

    metrics = train(cfg_train("trainer.max_epochs=2"))
    rows = read_history(tmp_path / "history.csv")
    assert [r["epoch"] for r in rows] == [0, 1] and {"train/loss", "val/acc", "lr"} <= set(rows[0])
    assert rows[-1]["val/acc"] == pytest.approx(metrics["val/acc"])
    page = check_page(tmp_path / "report.html", SECTIONS)
    record = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    shown = {n["key"]: n["value"] for n in page.numbers if n["key"] in record}
    assert {"test/acc", "test/loss", "val/acc"} <= set(shown)
    assert all(shown[k] == record[k] for k in shown)
    assert "report_files/confusion_matrix.png" in page.images
