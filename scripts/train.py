"""Trains a config in a workdir, resuming from its latest checkpoint.

  python scripts/train.py --config configs/digits_cnn.py --workdir runs/digits_cnn

Any config field can be overridden: `--config.batch_size=64`,
`--config.optimizer.learning_rate=0.1`; a variant is chosen with
`--config configs/digits_cnn.py:smoke`.
"""

from absl import flags
from ml_collections import config_flags

from jaxvision import cli, train

_CONFIG = config_flags.DEFINE_config_file("config", help_string="Config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv  # cli.run refuses stray arguments.
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
