"""Writes a dataset's splits as files: an image folder, MNIST's IDX files or a COCO JSON.

  python scripts/write_dataset.py --dataset digits --format image_folder --out DIR
  python scripts/write_dataset.py --dataset digits --format idx --out DIR
  python scripts/write_dataset.py --dataset digit_detection --format coco_json --out DIR

Every split of `--dataset` (any `data.load_source` name; jaxvision's own are
prepared first, offline, in `--data_dir`) keeps its name:
  image_folder: DIR/<split>/<class_name>/<index>.png (classification);
  idx: DIR/train-*-ubyte and DIR/t10k-*-ubyte (MNIST's names; classification,
    grey images of one size; `--gzip` compresses them);
  coco_json: DIR/annotations/<split>.json and DIR/<split>/<image id>.png (detection).
Then train on them, e.g. `--config configs/image_folder_cnn.py
--config.data.path=DIR --config.data.eval_split=test`.
"""

import itertools
import os

import numpy as np
import tqdm
from absl import flags, logging

from jaxvision import cli, data
from jaxvision.data import coco_json, idx_files, image_folder
from jaxvision.errors import UserError

FORMATS = ("image_folder", "idx", "coco_json")
_DATASET = flags.DEFINE_string("dataset", None, "The dataset to write, e.g. digits.")
_FORMAT = flags.DEFINE_enum("format", None, FORMATS, "The file format to write.")
_OUT = flags.DEFINE_string("out", None, "The folder to write the splits to.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "The tfds data dir; default: tfds's.")
_GZIP = flags.DEFINE_bool("gzip", False, "idx: gzip the files (.gz).")
flags.mark_flags_as_required(["dataset", "format", "out"])


def main(argv):
    del argv  # cli.run refuses stray arguments.
    name, out = _DATASET.value, _OUT.value
    info = data.dataset_info(name, _DATA_DIR.value)
    if info.is_detection != (_FORMAT.value == "coco_json"):
        kind = "a detection" if info.is_detection else "a classification"
        raise UserError(
            f"Dataset {name!r} is {kind} dataset, which --format {_FORMAT.value} cannot hold; "
            f"write it with --format {'coco_json' if info.is_detection else 'image_folder or idx'}."
        )
    # No splits: a catalog dataset not prepared, and load_source says how to prepare it.
    for split in info.num_examples or ("train",):
        source = data.load_source(name, split, _DATA_DIR.value)
        records = tqdm.tqdm(map(source.__getitem__, range(len(source))), total=len(source),
                            desc=split, unit="image")
        if _FORMAT.value == "image_folder":
            where = os.path.join(out, split)
            first, second = itertools.tee(records)  # Images and labels, read once.
            count = image_folder.write_image_folder(
                where, (r["image"] for r in first), (r["label"] for r in second),
                info.class_names,
            )
        elif _FORMAT.value == "idx":
            images, labels = zip(*((r["image"], r["label"]) for r in records), strict=True)
            where = idx_files.write_idx(out, split, images, np.array(labels), _GZIP.value)[0]
            count = len(images)
        else:
            where = os.path.join(out, "annotations", f"{split}.json")
            count = coco_json.write_coco_json(
                where, os.path.join(out, split), records, info.class_names, info.category_ids
            )
        logging.info("Wrote %d %s images of %s to %s.", count, split, name, where)


if __name__ == "__main__":
    cli.run(main)
