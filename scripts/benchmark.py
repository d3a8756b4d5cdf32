"""Times a config's train step (default), eval step or data loader; prints a table and JSON.

  python scripts/benchmark.py --config configs/imagenet_resnet50.py --steps 50
  python scripts/benchmark.py --config configs/imagenet_resnet50.py --dtype float32 \
      --batch_size 32 --image_size 128 --steps 5 --warmup 2 --reference
  python scripts/benchmark.py --config configs/digits_cnn.py --input
  python scripts/benchmark.py --config configs/digit_detection_fcos.py --reference
  python scripts/benchmark.py --config configs/moving_digits_tracking.py --track
  python scripts/benchmark.py --suite cpu   # The standard set, next to torchvision.

Train and eval steps run on synthetic data of the config's shapes (no dataset
needed); `--input` times the real loader alone, `--track` the tracker alone
(frames/s over a synthetic sequence; `--eval` gives the detector's frames/s). The JSON is the last line of
stdout, or goes to `--json PATH`. `--suite cpu|gpu` instead runs the standard
set (`jaxvision/benchmark_suite.py`), each model also in torchvision where the
`.[peers]` extra is installed, and prints one markdown table (`--json`: all
results). See docs/performance.md for measured figures.
"""

import json

from absl import flags
from ml_collections import config_flags

from jaxvision import benchmark, benchmark_suite, cli
from jaxvision.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", help_string="Config file[:arg].")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps before them (after compiling).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Overrides config.batch_size.")
_DTYPE = flags.DEFINE_string("dtype", None, "Overrides config.dtype (compute dtype).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None,
    "Overrides config.augment.crop_size and config.data.resize_size (classification) "
    "or config.data.image_size (detection).",
)
_TRAIN = flags.DEFINE_boolean("train", False, "Time the train step (the default).")
_EVAL = flags.DEFINE_boolean("eval", False, "Time the eval step.")
_INPUT = flags.DEFINE_boolean("input", False, "Time the data loader alone (needs the dataset).")
_TRACK = flags.DEFINE_boolean("track", False, "Time the tracker alone (a tracking config).")
_REFERENCE = flags.DEFINE_boolean(
    "reference", False, "Also time a minimal hand-written step of the same model."
)
_DEVICE = flags.DEFINE_enum("device", None, ["cpu", "gpu"], "Platform; default: JAX's choice.")
_JSON = flags.DEFINE_string("json", None, "Write the JSON here instead of stdout.")
_SUITE = flags.DEFINE_enum("suite", None, list(benchmark_suite.SUITES), "Run a standard set.")
_PEERS = flags.DEFINE_boolean(
    "peers", None, "With --suite: also time torchvision (default: if it is installed)."
)
_TIMEOUT = flags.DEFINE_float("timeout", 900, "With --suite: seconds one measurement may take.")


def run_suite():
    results = benchmark_suite.run_suite(
        _SUITE.value, peers=_PEERS.value, timeout=_TIMEOUT.value, json_path=_JSON.value
    )
    print(benchmark_suite.describe(results))
    print(benchmark_suite.format_table(results))


def main(argv):
    del argv  # cli.run refuses stray arguments.
    if _SUITE.value:
        return run_suite()  # Each run is its own process, with its own device.
    if _CONFIG.value is None:
        raise UserError("Pass --config FILE (one config) or --suite cpu|gpu (the standard set).")
    benchmark.select_platform(_DEVICE.value)  # Before anything touches a device.
    modes = [m for m, on in (("train", _TRAIN), ("eval", _EVAL), ("input", _INPUT),
                             ("track", _TRACK)) if on.value]
    if len(modes) > 1:
        raise UserError(f"Pick one of --train, --eval, --input, --track, not {len(modes)}.")
    config = benchmark.override(
        _CONFIG.value, batch_size=_BATCH_SIZE.value, dtype=_DTYPE.value,
        image_size=_IMAGE_SIZE.value,
    )
    result = benchmark.run_benchmark(
        config, mode=(modes or ["train"])[0], steps=_STEPS.value, warmup=_WARMUP.value,
        reference=_REFERENCE.value,
    )
    print(benchmark.format_table(result))
    if _JSON.value:
        benchmark.write_json(result, _JSON.value)
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
