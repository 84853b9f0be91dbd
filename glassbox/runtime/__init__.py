"""How runs live on machines (no analysis code here):

* :mod:`~glassbox.runtime.checkpoints`: loading checkpoints, atomic saves, resume paths;
* :mod:`~glassbox.runtime.resume`: ``python -m glassbox.resume <run dir>``;
* :mod:`~glassbox.runtime.rng`: random streams saved in and restored from checkpoints;
* :mod:`~glassbox.runtime.loggers`: the W&B factory and a CSV logger that survives resumes;
* :mod:`~glassbox.runtime.launchers`: Hydra launchers, DDP children, SLURM sizing, rank-0 logs;
* :mod:`~glassbox.runtime.slurm`: Lightning's SLURM requeue as a config factory;
* :mod:`~glassbox.runtime.devices`: start-up device checks and full-precision regions.

Submodules are imported on use (analysis code imports ``devices`` without Lightning).
"""
