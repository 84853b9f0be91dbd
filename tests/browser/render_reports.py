"""Render report.html files in headless Chromium: PNG screenshots, and a failure on any console
error, failed request or image that did not load.

    python tests/browser/render_reports.py [REPORT.html ...] [--out DIR]

Without reports it first makes a tiny run (``train.py``) and a tiny 2-job sweep
(``train.py -m model=glassbox,alexnet``) under ``--out`` and renders both of their reports.
For each report it writes ``<name>_top.png`` (the first screen, 1280×900: what a reader sees
first) and ``<name>_full.png`` (the whole page) into ``--out`` and prints one line per
problem; the exit status is 1 when there is any. ``make test-browser`` runs it.

Chromium is driven over its DevTools protocol through a small websocket client written with the
standard library (no extra package, no network: only 127.0.0.1). It needs the ``chromium``
binary (Debian/Ubuntu: ``apt-get install chromium``); when it is missing the script says so
and exits with status 2, installing nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1280, 900
MAX_HEIGHT = 12000  # full-page screenshots are cut here
TINY = [
    "logger=csv",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.equivariance.num_images=16",
    "data.batch_size=32",
]


class BrowserMissing(RuntimeError):
    pass


# --------------------------------------------------------------------------- websocket
class WebSocket:
    """The client side of RFC 6455, enough for the DevTools protocol (text frames)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        assert url.startswith("ws://"), url
        hostport, _, path = url[len("ws://") :].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            head += chunk
        header, _, self.buffer = head.partition(b"\r\n\r\n")
        if b" 101 " not in header.split(b"\r\n")[0]:
            raise ConnectionError(f"DevTools handshake failed: {header[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        parts = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        self.sock.close()


class DevTools:
    """One page target: ``call(method, **params)`` returns the result; events are kept."""

    def __init__(self, ws_url: str) -> None:
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60.0, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"{method}: no answer within {timeout:g} s")

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        for i, e in enumerate(self.events):
            if e["method"] == event:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == event:
                return msg
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"no {event} within {timeout:g} s")


# --------------------------------------------------------------------------- browser
def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing(
        "no Chromium found (looked for " + ", ".join(BROWSERS) + "). Install it, e.g. on "
        "Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y chromium; then rerun "
        "make test-browser"
    )


class Browser:
    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="glassbox-chromium-")
        self.proc = subprocess.Popen(
            [
                find_browser(),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("Chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def page(self) -> DevTools:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t.get("type") == "page")
        return DevTools(page["webSocketDebuggerUrl"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


IMAGES_JS = """JSON.stringify(Array.from(document.images).map(i => ({
  src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})))"""


def render(page: DevTools, report: Path, out_dir: Path, name: str) -> list[str]:
    """Load ``report``, save the two screenshots, return the problems found."""
    page.events.clear()
    for domain in ("Page", "Runtime", "Log", "Network"):
        page.call(f"{domain}.enable")
    page.call(
        "Emulation.setDeviceMetricsOverride",
        width=WIDTH,
        height=HEIGHT,
        deviceScaleFactor=1,
        mobile=False,
    )
    page.call("Page.navigate", url=report.resolve().as_uri())
    page.wait_for("Page.loadEventFired")
    images = json.loads(
        page.call("Runtime.evaluate", expression=IMAGES_JS, returnByValue=True)["result"]["value"]
    )
    problems = [f"{report}: image {i['src']} did not load" for i in images if not i["ok"]]
    shot = page.call("Page.captureScreenshot", format="png")
    (out_dir / f"{name}_top.png").write_bytes(base64.b64decode(shot["data"]))
    height = int(page.call("Page.getLayoutMetrics")["cssContentSize"]["height"])
    page.call(
        "Emulation.setDeviceMetricsOverride",
        width=WIDTH,
        height=min(max(height, HEIGHT), MAX_HEIGHT),
        deviceScaleFactor=1,
        mobile=False,
    )
    shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (out_dir / f"{name}_full.png").write_bytes(base64.b64decode(shot["data"]))
    # drain what arrived meanwhile, then read the console and the network
    page.call("Runtime.evaluate", expression="1")
    for e in page.events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])
            )
            problems.append(f"{report}: console error: {text}")
        elif e["method"] == "Runtime.exceptionThrown":
            problems.append(f"{report}: exception: {p['exceptionDetails'].get('text')}")
        elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
            entry = p["entry"]
            problems.append(f"{report}: console error: {entry.get('text')} {entry.get('url', '')}")
        elif e["method"] == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"{report}: request failed: {p.get('errorText')}")
    return list(dict.fromkeys(problems))


def check_reports(reports: list[Path], out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    browser = Browser()
    problems = []
    try:
        page = browser.page()
        names = set()
        for report in reports:
            if not report.is_file():
                problems.append(f"{report}: no such file")
                continue
            name = "sweep" if (report.parent / "summary.csv").is_file() else "run"
            while name in names:
                name += "_"
            names.add(name)
            found = render(page, report, out_dir, name)
            problems += found
            print(
                f"{report}: {'ok' if not found else f'{len(found)} problem(s)'} "
                f"-> {out_dir / (name + '_top.png')}, {out_dir / (name + '_full.png')}"
            )
        page.ws.close()
    finally:
        browser.close()
    return problems


# --------------------------------------------------------------------------- tiny runs
def make_runs(work: Path) -> list[Path]:
    """A tiny run and a tiny 2-job sweep under ``work``; their report.html paths."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    logs = work / "logs"
    for extra in ([], ["-m", "model=glassbox,alexnet", "rotated_test.angles=[0,90]"]):
        cmd = [sys.executable, str(ROOT / "train.py"), *extra, *TINY, f"paths.log_dir={logs}"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    (run,) = (logs / "train" / "runs").iterdir()
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    proc = subprocess.run(
        [sys.executable, "-m", "glassbox.report", str(sweep)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"python -m glassbox.report {sweep} failed:\n{proc.stderr[-3000:]}")
    return [run / "report.html", sweep / "report.html"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "reports", nargs="*", type=Path, help="report.html files (default: make tiny runs)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "logs" / "browser",
        help="screenshots (and tiny runs) go here",
    )
    args = parser.parse_args(argv)
    try:
        find_browser()
    except BrowserMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reports = args.reports
    if not reports:
        work = Path(
            tempfile.mkdtemp(
                prefix="runs-", dir=args.out.mkdir(parents=True, exist_ok=True) or args.out
            )
        )
        print(f"making a tiny run and a tiny sweep under {work} ...")
        reports = make_runs(work)
    problems = check_reports(reports, args.out)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
