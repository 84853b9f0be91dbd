"""What the entry points need from Hydra beyond ``@hydra.main``: one-line composition errors
and a ``--help`` that lists the config groups.

``train.py`` and ``evaluate.py`` call :func:`main` with their ``@hydra.main`` function.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from glassbox.config.errors import one_line_errors

DOCS = "docs/configuration.md"

# config group → one line; the options and their descriptions are read from the conf/ files
GROUPS = {
    "data": "the dataset, its preprocessing, split, rotation and loading",
    "model": "the LightningModule and its net, optimizer and LR scheduler",
    "callbacks": "Lightning callbacks and the analysis reports (a list: callbacks=[default,separability])",
    "logger": "where metrics go (W&B offline by default, CSV, TensorBoard)",
    "trainer": "Lightning Trainer presets: accelerator, devices, precision, strategy",
    "paths": "where data, logs and run directories live",
    "experiment": "a whole experiment: overrides of any group, and the sweep of a multirun (-m)",
    "variant": "a named model/data variant of experiment=rotation_ablation (any run takes one)",
    "hparams_search": "a hyperparameter search with a sweeper plugin (-m)",
    "debug": "quick checks: one batch, a few batches, overfitting",
    "local": "your git-ignored per-user settings (conf/local/default.yaml)",
    "hydra/launcher": "how the jobs of a multirun run: in-process (default), local processes, SLURM",
}

TASKS = {
    "train": "python train.py: train a model, then test its best checkpoint",
    "evaluate": "python evaluate.py ckpt_path=<checkpoint>: test a checkpoint and run the analyses",
}


def main(hydra_main: Callable[[], Any]) -> Any:
    """Run a ``@hydra.main`` function; a composition error (wrong type, unknown key, enum value,
    missing option) is printed as one line ``error: <key>: <cause>``, exit status 1.

    Hydra prints its own multi-line report unless ``HYDRA_FULL_ERROR=1``, in which case it
    raises; this sets it for the call so the error can be shortened here. A user who set
    ``HYDRA_FULL_ERROR=1`` gets Hydra's exception with its traceback, as Hydra documents.
    """
    before = os.environ.get("HYDRA_FULL_ERROR")
    if before == "1":
        return hydra_main()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with one_line_errors():
            return hydra_main()
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


# --------------------------------------------------------------------------- --help
def _description(path: Path, limit: int = 100) -> str:
    """One line about a config file: the first sentence of its leading comment, else what it
    composes and sets, else the classes it builds."""
    text = path.read_text()
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        line = line.lstrip("#").strip()
        if line.startswith("@package"):
            continue
        if not line and comment:
            break
        comment.append(line)
    if comment:
        text = re.sub(r"\s*\(DESIGN\.md[^)]*\)", "", " ".join(comment))
        first = re.split(r"(?<=[.;])\s|:\s+(?=[a-z#`])", text, maxsplit=1)[0].rstrip(".:;")
        return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"
    defaults = re.search(r"^defaults:\n((?:\s+- .*\n?)+)", text, re.M)
    if defaults:
        names = re.findall(r"-\s*(?:override\s+)?/?([\w/]+)(?:@\w+)?", defaults.group(1))
        names = [n for n in names if n != "_self_" and not n.startswith("schema")]
        sets = re.findall(r"^(\w+):\s*([^\s#][^#\n]*?)\s*(?:#.*)?$", text, re.M)
        sets = [f"{k}={v}" for k, v in sets if k != "defaults"]
        return " + ".join(names) + (f" with {', '.join(sets)}" if sets else "")
    targets = re.findall(r"_target_:\s*([\w.]+)", text)
    return ", ".join(dict.fromkeys(t.rsplit(".", 1)[-1] for t in targets))


def config_help(config_name: str) -> str:
    """The ``--help`` text of ``config_name``: its groups, their options, one line each."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    conf = next(
        Path(s.path)
        for s in hc.runtime.config_sources
        if s.provider == "main" and s.schema == "file"
    )
    choices = dict(hc.runtime.choices)
    lines = [
        TASKS.get(config_name, config_name),
        "",
        "Config groups (pick an option: group=option):",
    ]
    for group, about in GROUPS.items():
        if group not in choices and group not in ("local",):
            continue
        folder = conf / group
        files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        chosen = choices.get(group)
        shown = f" (default: {chosen})" if chosen and files else ""
        lines.append(f"  {group}: {about}{shown}")
        if not files:
            lines.append("      (no options yet)")
        width = max((len(f.stem) for f in files), default=0)
        for f in files:
            lines.append(f"      {f.stem.ljust(width)}  {_description(f)}".rstrip())
    lines += [
        "",
        "Override any key: key=value (model.optimizer.lr=0.001), add one: +key=value, "
        "remove one: ~key.",
        f"Every key with its type, default and meaning: {DOCS}",
        f"The composed config: python {config_name}.py --cfg job   Hydra's flags: --hydra-help",
    ]
    return "\n".join(lines)


def register_resolver() -> None:
    if not OmegaConf.has_resolver("gb.help"):
        OmegaConf.register_new_resolver("gb.help", config_help)
