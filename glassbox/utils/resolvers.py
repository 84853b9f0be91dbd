"""OmegaConf resolvers used by the configs (registered once, on import of glassbox.pipeline)."""

from __future__ import annotations

from omegaconf import OmegaConf


def _num_classes(classes, total: int) -> int:
    return len(classes) if classes is not None else int(total)


def register() -> None:
    if not OmegaConf.has_resolver("gb.num_classes"):
        # data.num_classes: the selected subset's size, or all classes of the dataset.
        OmegaConf.register_new_resolver("gb.num_classes", _num_classes)
    if not OmegaConf.has_resolver("gb.len"):
        OmegaConf.register_new_resolver("gb.len", lambda x: len(x))
    if not OmegaConf.has_resolver("gb.wandb_group"):
        from glassbox.runtime.loggers import wandb_group

        OmegaConf.register_new_resolver("gb.wandb_group", lambda: wandb_group())
    if not OmegaConf.has_resolver("gb.wandb_job"):
        from glassbox.runtime.loggers import wandb_job_suffix

        OmegaConf.register_new_resolver("gb.wandb_job", lambda: wandb_job_suffix())
    if not OmegaConf.has_resolver("gb.plugin"):
        # _target_ of the launcher/sweeper configs: one clear error when the plugin is missing.
        from glassbox.runtime.launchers import require_plugin

        OmegaConf.register_new_resolver("gb.plugin", require_plugin)
    if not OmegaConf.has_resolver("gb.rank_zero_subdir"):
        # hydra.output_subdir, SLURM launcher resources: see glassbox/launchers.py
        from glassbox.runtime import launchers

        OmegaConf.register_new_resolver("gb.rank_zero_subdir", launchers.rank_zero_subdir)
        OmegaConf.register_new_resolver("gb.slurm_gpus", launchers.slurm_gpus_per_node)
        OmegaConf.register_new_resolver("gb.slurm_tasks", launchers.slurm_tasks_per_node)
