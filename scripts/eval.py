"""Restores the latest checkpoint of a workdir and prints the eval metrics.

  python scripts/eval.py --config configs/digits_cnn.py --workdir runs/digits_cnn
"""

import json

from absl import flags
from ml_collections import config_flags

from jaxvision import cli, experiment

_CONFIG = config_flags.DEFINE_config_file("config", help_string="Config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's workdir.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv  # cli.run refuses stray arguments.
    metrics = experiment.evaluate(_CONFIG.value, _WORKDIR.value)
    print(json.dumps({"split": _CONFIG.value.data.eval_split, **metrics}))


if __name__ == "__main__":
    cli.run(main)
