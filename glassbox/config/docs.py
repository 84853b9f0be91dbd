"""Write docs/configuration.md from the schemas: every key with its type, default and meaning.

    python -m glassbox.config.docs > docs/configuration.md

Types and meanings come from the schema dataclasses (:mod:`glassbox.config.schemas`), defaults
from the composed default config (the YAML files under conf/), so the page shows what a run
really gets. ``tests/test_config_schemas.py`` fails when the checked-in page is not current.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from glassbox.config import schemas
from glassbox.config.cli import GROUPS, _description

CONF = Path(__file__).resolve().parents[2] / "conf"
ANALYSIS = "callbacks=[default,separability,interpretation]"

# (title, schema, config name, overrides, node path, keys left out: they are sections of their own)
SECTIONS: list[tuple[str, Any, str, list[str], str, set[str]]] = [
    (
        "Top level: `train.py` (conf/train.yaml)",
        schemas.TrainConfig,
        "train",
        [],
        "",
        {"data", "model", "callbacks", "logger", "trainer", "paths"},
    ),
    (
        "Top level: `evaluate.py` (conf/evaluate.yaml)",
        schemas.EvaluateConfig,
        "evaluate",
        [],
        "",
        {"data", "callbacks", "logger", "trainer", "paths"},
    ),
    ("`paths` (conf/paths/)", schemas.PathsConfig, "train", [], "paths", set()),
    ("`data` (conf/data/; default `digits`)", schemas.DataConfig, "train", [], "data", set()),
    (
        "`model` (conf/model/; default `glassbox`)",
        schemas.ModelConfig,
        "train",
        [],
        "model",
        {"net", "optimizer", "scheduler"},
    ),
    (
        "`model` keys of `model=glassbox` only",
        schemas.GlassBoxModelConfig,
        "train",
        [],
        "model",
        {f.name for f in dataclasses.fields(schemas.ModelConfig)},
    ),
    ("`model.net` of `model=glassbox`", schemas.GlassBoxNetConfig, "train", [], "model.net", set()),
    (
        "`model.net` of `model=alexnet`",
        schemas.AlexNetConfig,
        "train",
        ["model=alexnet"],
        "model.net",
        set(),
    ),
    ("`model.optimizer` (open)", schemas.OptimizerConfig, "train", [], "model.optimizer", set()),
    ("`model.scheduler` (open)", schemas.SchedulerConfig, "train", [], "model.scheduler", set()),
    ("`trainer` (conf/trainer/; open)", schemas.TrainerConfig, "train", [], "trainer", set()),
]


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(m.value for m in hint)
    if origin is typing.Union or (origin is not None and type(None) in args):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in rest) + " or null"
    if origin in (list, typing.List):  # noqa: UP006
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, typing.Dict):  # noqa: UP006
        return "mapping"
    if dataclasses.is_dataclass(hint):
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def schema_keys(schema: Any, prefix: str = "", skip: set[str] = frozenset()) -> list[tuple]:
    """(dotted key, type hint, field) of every field of ``schema``, nested schemas flattened."""
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        if f.name in skip:
            continue
        hint = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            out += schema_keys(hint, f"{name}.")
        else:
            out.append((name, hint, f))
    return out


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import glassbox.config  # noqa: F401  (registers the schemas)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _defaults(node: DictConfig | None) -> dict[str, Any]:
    if node is None:
        return {}
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}{k}.")
            if prefix:
                flat[prefix[:-1]] = value
        else:
            flat[prefix[:-1]] = value

    walk(OmegaConf.to_container(node, resolve=False, enum_to_str=True), "")
    return flat


def _table(schema: Any, node: DictConfig | None, skip: set[str]) -> list[str]:
    defaults = _defaults(node)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, hint, f in schema_keys(schema, skip=skip):
        default = _value(defaults[name]) if name in defaults else "(unset)"
        default = "??? (required)" if default == "???" else default
        meaning = f.metadata.get("help", "")
        if f.metadata.get("range"):
            from glassbox.config.checks import RANGES

            meaning += f" (checked: {RANGES[f.metadata['range']][1]})"
        rows.append(
            f"| `{name}` | {_cell(_type_name(hint))} | `{_cell(default)}` | {_cell(meaning)} |"
        )
    return rows


def _options(group: str) -> list[str]:
    folder = CONF / group
    return [
        f"- `{group}={p.stem}`: {_description(p)}"
        for p in sorted(folder.glob("*.yaml"))
        if not p.stem.startswith("_")
    ]


def generate() -> str:
    composed: dict[tuple[str, tuple[str, ...]], DictConfig] = {}

    def node_of(config_name: str, overrides: list[str], path: str) -> DictConfig | None:
        key = (config_name, tuple(overrides))
        if key not in composed:
            composed[key] = _compose(config_name, overrides)
        cfg = composed[key]
        return cfg if not path else OmegaConf.select(cfg, path)

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m glassbox.config.docs > docs/configuration.md` from the schemas",
        "in glassbox/config/schemas.py and the defaults in conf/; do not edit by hand. -->",
        "",
        "Every key glassbox owns, with its type, its default (as composed from `conf/`, "
        "interpolations shown unresolved) and its meaning. `python train.py --help` lists the "
        "config groups and their options.",
        "",
        "**How keys are checked.** The schemas are Hydra structured configs: a value of the wrong "
        "type, a key the schema does not have, or an enum value outside its set stops the run "
        "while Hydra composes the config, before the run directory exists, with one line "
        "naming the key, e.g. `error: data.rotation.mode: Invalid value 'spin', expected one "
        'of [random, fixed]`. Ranges ("checked" below) are checked once at start-up: '
        "`error: model.optimizer.lr=-1.0 must be > 0; set e.g. model.optimizer.lr=0.001`. Any "
        "exception raised while the objects are built from the config (datamodule, model, "
        "optimizer, scheduler, callbacks, loggers, trainer) is one line naming the config node: "
        "`error: callbacks.equivariance: unknown group 'Z4': ...`. All three exit with status 1 "
        "and no traceback, before anything is written: a run directory that holds nothing but "
        "what Hydra wrote at start-up (`.hydra/`, the log file) is removed again. "
        "`GLASSBOX_TRACEBACK=1` shows the traceback of a build error; `HYDRA_FULL_ERROR=1` "
        "shows Hydra's own report of a composition error. Errors raised while training keep "
        "their traceback.",
        "",
        "**Open groups.** Lightning owns `trainer`, `logger`, its callbacks and "
        "`hydra/launcher`: any argument of the class they build may be set there "
        "(`trainer.accumulate_grad_batches=4`); the `trainer` keys listed below are typed. "
        "`model.optimizer` and `model.scheduler` are open too: add the arguments of another "
        "`_target_` with `+` (`+model.optimizer.momentum=0.9`).",
        "",
        "**Adding a key.** Add the field, with its type, default and `help` (and a `range` if "
        "one applies), to the schema in glassbox/config/schemas.py, add it to the YAML file, "
        "and regenerate this page. An analysis callback's keys are its constructor's arguments: "
        "add the argument (with a type hint and an `Args:` line in the docstring) and the key "
        "exists.",
    ]
    listed: set[str] = set()
    for title, schema, config_name, overrides, path, skip in SECTIONS:
        doc = " ".join((schema.__doc__ or "").split())
        out += [
            "",
            f"## {title}",
            "",
            doc,
            "",
            *_table(schema, node_of(config_name, overrides, path), skip),
        ]
        group = path.split(".")[0] if path else ""
        if path in ("data", "model", "trainer") and path not in listed:
            listed.add(path)  # a group's options once, after its first section
            out += ["", "Options:", "", *_options(group)]
    for name, schema in schemas.analysis_callbacks().items():
        node = node_of("train", [ANALYSIS], f"callbacks.{name}")
        doc = " ".join((schema.__doc__ or "").split())
        out += [
            "",
            f"## `callbacks.{name}` (conf/callbacks/{name}.yaml)",
            "",
            f"{doc} The keys are the constructor's arguments.",
            "",
            *_table(schema, node, set()),
        ]
    out += [
        "",
        "## Open groups",
        "",
        "Their keys are the arguments of the class each entry's `_target_` names.",
    ]
    for group in (
        "callbacks",
        "logger",
        "hydra/launcher",
        "experiment",
        "variant",
        "hparams_search",
        "debug",
    ):
        out += ["", f"### `{group}`: {GROUPS[group]}", "", *_options(group)]
    return "\n".join(out) + "\n"


def main() -> None:
    sys.stdout.write(generate())


if __name__ == "__main__":
    main()
