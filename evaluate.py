"""Evaluate a checkpoint (Hydra config conf/evaluate.yaml): test metrics and analysis reports.

python evaluate.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
python evaluate.py --help                # config groups and options; docs/configuration.md
"""

import hydra
from omegaconf import DictConfig

from glassbox import pipeline
from glassbox.config import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    pipeline.run(cfg, pipeline.evaluate)


if __name__ == "__main__":
    cli.main(main)
