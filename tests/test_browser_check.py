"""The headless-Chromium check of the reports (tests/browser/render_reports.py) catches what it
promises: an image that does not load and a console error; a clean page passes. Skipped where
Chromium is not installed (``make test-browser`` says how to install it)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from test_html_report import png_bytes

SCRIPT = Path(__file__).parent / "browser" / "render_reports.py"
spec = importlib.util.spec_from_file_location("render_reports", SCRIPT)
render_reports = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_reports)

pytestmark = pytest.mark.skipif(
    not any(shutil.which(b) for b in render_reports.BROWSERS),
    reason="no Chromium (Debian/Ubuntu: apt-get install chromium)",
)

HEAD = '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>'


def test_the_browser_check_fails_on_a_missing_image_and_a_console_error(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for d in (good, bad):
        d.mkdir()
    (good / "a.png").write_bytes(png_bytes())
    (good / "report.html").write_text(f'{HEAD}<body><img src="a.png"><p>ok</p></body></html>')
    (bad / "report.html").write_text(
        f'{HEAD}<body><img src="missing.png"><script>console.error("boom")</script></body></html>'
    )
    problems = render_reports.check_reports(
        [good / "report.html", bad / "report.html"], tmp_path / "shots"
    )
    assert all(str(bad) in p for p in problems), problems
    assert any("image missing.png did not load" in p for p in problems)
    assert any(p.endswith("console error: boom") for p in problems)
    # screenshots of both pages, PNG files
    for name in ("run_top", "run_full", "run__top", "run__full"):
        assert (tmp_path / "shots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_browser_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setattr(render_reports.shutil, "which", lambda name: None)
    assert render_reports.main(["x.html"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install -y chromium" in err[0]
