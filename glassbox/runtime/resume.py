"""Resuming interrupted runs: ``python -m glassbox.resume <run dir>``.

An interrupted run continues *in its own run directory*::

    python train.py <the run's overrides> hydra.run.dir=<run dir> ckpt_path=last
    python -m glassbox.resume <run dir>          # the same, with the overrides read back from
                                                 # <run dir>/.hydra/overrides.yaml

``ckpt_path=last`` picks the newest of ``checkpoints/last.ckpt`` (end of every epoch) and
Lightning's ``hpc_ckpt_<n>.ckpt`` (written on a SLURM requeue signal); see
:func:`glassbox.runtime.checkpoints.resolve_resume_path`. With ``trainer.deterministic=true`` and the same
seed, a run resumed from an end-of-epoch checkpoint ends with the same weights and metrics as an
uninterrupted one, because :class:`glassbox.runtime.rng.RNGStateCallback` stores and restores the random streams that
shuffle the data and draw dropout masks and augmentations (tested in ``tests/test_resume.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from glassbox.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

_REPLACED = ("ckpt_path=", "hydra.run.dir=", "+ckpt_path=", "++ckpt_path=")


def resume_command(run_dir: str | Path, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The command that continues the training run in ``run_dir``: ``train.py`` with the run's
    own overrides (``.hydra/overrides.yaml``), then ``extra``, then
    ``hydra.run.dir=<run dir> ckpt_path=last``."""
    import yaml

    run_dir = Path(run_dir).expanduser().resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"{run_dir} is not a glassbox run directory (no .hydra/overrides.yaml); pass the directory a "
            "train.py run wrote, e.g. logs/train/runs/<time> or logs/train/multiruns/<time>/<n>"
        )
    overrides = [str(o) for o in (yaml.safe_load(saved.read_text()) or [])]
    kept = [o for o in overrides if not o.startswith(_REPLACED)]
    script = ROOT / "train.py"
    if not script.is_file():
        raise ConfigError(
            f"train.py not found at {script}; run from a source checkout (pip install -e .)"
        )
    return [
        sys.executable,
        str(script),
        *kept,
        *extra,
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last",
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m glassbox.resume <run dir> [extra overrides...]``: continue an interrupted run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if args else 2
    try:
        cmd = resume_command(args[0], args[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("resuming:", " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
