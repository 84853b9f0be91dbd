"""Configs as a typed interface: schemas (Hydra structured configs), start-up range checks,
one-line errors, ``--help`` and the generated docs/configuration.md.

Importing this package registers the schemas in Hydra's ConfigStore (idempotent), which must
happen before Hydra composes a config whose defaults name ``/schema/...``; the entry points
import it through :mod:`glassbox.pipeline`.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from glassbox.config import schemas

# (ConfigStore group, name) → (schema, open): open schemas type their keys but take any other
# key (Lightning's Trainer, optimizers and schedulers have many arguments glassbox does not own).
SCHEMAS: dict[tuple[str, str], tuple[type, bool]] = {
    ("schema", "train"): (schemas.TrainConfig, False),
    ("schema", "evaluate"): (schemas.EvaluateConfig, False),
    ("schema", "data"): (schemas.DataConfig, False),
    ("schema/model", "glassbox"): (schemas.GlassBoxModelConfig, False),
    ("schema/model", "alexnet"): (schemas.AlexNetModelConfig, False),
    ("schema", "optimizer"): (schemas.OptimizerConfig, True),
    ("schema", "scheduler"): (schemas.SchedulerConfig, True),
    ("schema", "trainer"): (schemas.TrainerConfig, True),
}

_registered = False


def register() -> None:
    """Store every schema in Hydra's ConfigStore (once per process)."""
    global _registered
    if _registered:
        return
    from glassbox.config.cli import register_resolver
    from glassbox.utils import resolvers

    resolvers.register()
    register_resolver()
    cs = ConfigStore.instance()
    for (group, name), (schema, open_) in SCHEMAS.items():
        node = OmegaConf.structured(schema, flags={"struct": False}) if open_ else schema
        cs.store(group=group, name=name, node=node)
    for name, schema in schemas.analysis_callbacks().items():
        cs.store(group="schema/callbacks", name=name, node=schema)
    _registered = True


register()
