"""Cost of the typed config schemas when Hydra composes the default config.

Side by side in one process, interleaved round by round (so machine load hits both alike), it
composes ``train`` with Hydra's compose API (a fresh GlobalHydra each time, as an entry point
does once per process) from

- ``before``: conf/ as of the commit before the schemas were attached (extracted with git),
- ``after``: conf/ of this working tree (every default names its ``/schema/...``),

and prints the median of each and the difference (target: at most 0.2 s more). It also times
the one-off start-up work: building and storing the schemas (:func:`glassbox.config.register`
minus the imports the entry points do anyway) and the start-up range check.

    python benchmarks/bench_config.py [--rounds 30] [--baseline <git rev>]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _baseline_rev() -> str:
    """The parent of the first commit that attached a schema to conf/train.yaml."""
    out = subprocess.run(
        [
            "git",
            "log",
            "--format=%H",
            "--reverse",
            "-S/schema/train@_here_",
            "--",
            "conf/train.yaml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not out:
        raise SystemExit("no commit attaches the schemas to conf/train.yaml; pass --baseline")
    return f"{out[0]}~1"


def _extract_conf(rev: str, dest: Path) -> Path:
    tar = subprocess.run(
        ["git", "archive", rev, "conf"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest / "conf"


def _compose_seconds(conf: Path) -> float:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    start = time.perf_counter()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[], return_hydra_config=True)
    assert cfg.model.net._target_
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--baseline", default=None, help="git rev of the conf/ before (default: auto)"
    )
    args = parser.parse_args()

    import glassbox.pipeline  # noqa: F401  (what train.py imports before Hydra composes)
    from glassbox.config import schemas

    rev = args.baseline or _baseline_rev()
    with tempfile.TemporaryDirectory() as tmp:
        before_conf = _extract_conf(rev, Path(tmp))
        after_conf = ROOT / "conf"
        for conf in (before_conf, after_conf):  # warm-up: imports, caches
            _compose_seconds(conf)
        before, after = [], []
        for _ in range(args.rounds):
            before.append(_compose_seconds(before_conf))
            after.append(_compose_seconds(after_conf))

    t0 = time.perf_counter()
    schemas.analysis_callbacks()
    build = time.perf_counter() - t0

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from glassbox.config.checks import check_ranges

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[])
    from omegaconf import open_dict

    with open_dict(cfg):
        for key in ("root_dir", "data_dir", "log_dir", "output_dir"):
            cfg.paths[key] = key  # no Hydra runtime to resolve ${hydra:...} against
    t0 = time.perf_counter()
    check_ranges(cfg)
    check = time.perf_counter() - t0

    b, a = statistics.median(before), statistics.median(after)
    print(f"baseline conf/: {rev}, {args.rounds} rounds, interleaved")
    print(f"compose train (before): median {b * 1000:8.1f} ms")
    print(f"compose train (after):  median {a * 1000:8.1f} ms")
    print(f"difference:                    {(a - b) * 1000:+8.1f} ms  (target <= +200 ms)")
    print(
        f"one-off: build the callback schemas {build * 1000:.1f} ms, range check {check * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
