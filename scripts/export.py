"""Exports a trained classifier or detector as serialized StableHLO, for any batch size.

  python scripts/export.py --config configs/digits_cnn.py \
      --workdir runs/digits_cnn --out digits_cnn.stablehlo

Restores the workdir's newest checkpoint and writes `--out` (`jax.export`,
lowered for CPU and CUDA, the variables inside) and `--out`.json: the input
shape and dtype, the output names, shapes and dtypes, the class names, the
config and the checkpoint step. The exported function takes uint8 images
`[b, H, W, C]` as an eval batch holds them (detectors: letterboxed canvases)
and returns a dict: "logits" `[b, K]`, or a detector's padded "boxes",
"scores", "labels" and "valid" (see jaxvision/export.py). In Python:

  exported = jaxvision.export.load_stablehlo("digits_cnn.stablehlo")
  logits = exported.call(images)["logits"]
"""

from absl import flags, logging
from ml_collections import config_flags

from jaxvision import cli, experiment, export

_CONFIG = config_flags.DEFINE_config_file("config", help_string="Config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's workdir.")
_OUT = flags.DEFINE_string("out", None, f"Output file, ending in {export.SUFFIX}.")
flags.mark_flags_as_required(["config", "workdir", "out"])


def main(argv):
    del argv  # cli.run refuses stray arguments.
    export.check_path(_OUT.value)  # Before the restore: fail fast.
    config = _CONFIG.value
    exp, variables, step = experiment.restore(config, _WORKDIR.value)
    exported = export.export_stablehlo(exp, variables)
    config_name = config_flags.get_config_filename(flags.FLAGS["config"])
    export.save(_OUT.value, exported, export.metadata(exported, exp, step, config_name))
    logging.info("Checkpoint step %d -> %s (+ .json), input %s.",
                 step, _OUT.value, exported.in_avals[0].str_short())


if __name__ == "__main__":
    cli.run(main)
