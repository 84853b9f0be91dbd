"""``python -m glassbox.resume <run dir> [extra overrides...]``: continue an interrupted run
(see :mod:`glassbox.runtime.resume`)."""

from glassbox.runtime.resume import main, resume_command

__all__ = ["main", "resume_command"]

if __name__ == "__main__":
    raise SystemExit(main())
