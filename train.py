"""Train a model (Hydra config conf/train.yaml), then test its best checkpoint.

python train.py                          # glass-box model on the embedded digits
python train.py model=alexnet data=shapes
python train.py -m model=glassbox,alexnet
python train.py --help                   # config groups and options; docs/configuration.md
"""

import hydra
from omegaconf import DictConfig

from glassbox import pipeline
from glassbox.config import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return pipeline.run(cfg, pipeline.train)


if __name__ == "__main__":
    cli.main(main)
