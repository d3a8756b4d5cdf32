"""Test setup: 8 virtual CPU devices, so sharding tests run on any machine.

The flag must be set before `jax` is first imported, which is why it lives
here (and why jaxvision is imported inside the fixtures).
"""

import os

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def digit_detection_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "digit_detection" has been prepared (once per session)."""
    from jaxvision import data

    data_dir = str(tmp_path_factory.mktemp("tfds_detection"))
    data.load_source("digit_detection", "train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def digit_instances_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "digit_instances" has been prepared (once per session)."""
    from jaxvision import data

    data_dir = str(tmp_path_factory.mktemp("tfds_instances"))
    data.load_source("digit_instances", "train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def moving_digits_dir(tmp_path_factory) -> str:
    """A tfds data dir in which "moving_digits" has been prepared (once per session)."""
    from jaxvision import data

    data_dir = str(tmp_path_factory.mktemp("tfds_moving_digits"))
    data.load_source("moving_digits", "train", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def coco_dir(tmp_path_factory) -> str:
    """A tfds data dir holding a tiny prepared `coco/2017` of random images.

    Written by a builder with tfds coco's exact features (JPEG images of
    varying size, normalized yxyx boxes, 80 classes, crowd flags, unique
    annotation ids), so reading it goes through the same path as the real,
    prepared COCO. Like real COCO, the masks are not in the tfds records but
    in COCO instances JSON files, `annotations/instances_{train,val}2017.json`
    in the same dir (see `coco_annotations`): object j of an image has a
    polygon (j = 0), an uncompressed RLE (j = 1) or a compressed RLE (j = 2)
    inside its box.
    """
    import io
    import json
    import os

    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    annotations = {"train": [], "validation": []}  # COCO "annotations" per split.

    class FakeCoco(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "coco"
        VERSION = tfds.core.Version("1.1.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2017")]  # noqa: RUF012

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                "image/filename": tfds.features.Text(),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "area": np.int64, "bbox": tfds.features.BBoxFeature(), "id": np.int64,
                    "is_crowd": np.bool_, "label": tfds.features.ClassLabel(num_classes=80),
                }),
            }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(16, 0, annotations["train"]),
                    "validation": self._generate_examples(8, 1000, annotations["validation"])}

        def _generate_examples(self, num, first_id, split_annotations):
            rng = np.random.default_rng(first_id)
            for image_id in range(first_id, first_id + num):
                height, width = rng.integers(40, 100, 2)
                jpeg = io.BytesIO()
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(image).save(jpeg, "JPEG")
                k = int(rng.integers(0, 4))  # Some images have no objects.
                y0, x0 = rng.uniform(0, 0.5, (2, k))
                ids = [10 * image_id + j for j in range(k)]
                for j in range(k):
                    box = np.array([x0[j], y0[j], x0[j] + 0.3, y0[j] + 0.4]) * [
                        width, height, width, height]  # xyxy pixels
                    split_annotations.append({
                        "id": ids[j], "image_id": image_id, "iscrowd": int(j == 2),
                        "segmentation": _fake_segmentation(j, box, int(height), int(width)),
                    })
                yield image_id, {
                    "image": jpeg.getvalue(),
                    "image/filename": f"{image_id:012d}.jpg",
                    "image/id": image_id,
                    "objects": {
                        "area": [100] * k,
                        "bbox": [tfds.features.BBox(y0[j], x0[j], y0[j] + 0.4, x0[j] + 0.3)
                                 for j in range(k)],
                        "id": ids,
                        "is_crowd": [j == 2 for j in range(k)],
                        "label": list(rng.integers(0, 80, k)),
                    },
                }

    data_dir = str(tmp_path_factory.mktemp("tfds_coco"))
    FakeCoco(data_dir=data_dir).download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )
    os.makedirs(os.path.join(data_dir, "annotations"))
    for split, path in _coco_annotation_paths(data_dir).items():
        with open(path, "w") as f:
            json.dump({"annotations": annotations[split]}, f)
    return data_dir


@pytest.fixture(scope="session")
def coco_annotations(coco_dir) -> dict[str, str]:
    """{"train": path, "validation": path} of `coco_dir`'s COCO instances JSON files."""
    return _coco_annotation_paths(coco_dir)


def _coco_annotation_paths(data_dir: str) -> dict[str, str]:
    import os

    folder = os.path.join(data_dir, "annotations")
    return {"train": os.path.join(folder, "instances_train2017.json"),
            "validation": os.path.join(folder, "instances_val2017.json")}


def _fake_segmentation(kind: int, box, height: int, width: int):
    """A COCO segmentation inside `box` (xyxy pixels) of a height x width image.

    kind 0: a polygon, the diamond through the box's edge midpoints; 1: an
    uncompressed RLE of the box's middle half; 2: a compressed RLE of its left
    two thirds.
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    x0, y0, x1, y1 = box
    if kind == 0:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return [[cx, y0, x1, cy, cx, y1, x0, cy]]
    mask = np.zeros((height, width), np.uint8)
    if kind == 1:
        w, h = x1 - x0, y1 - y0
        mask[round(y0 + h / 4) : round(y1 - h / 4), round(x0 + w / 4) : round(x1 - w / 4)] = 1
        flat = mask.ravel(order="F")  # COCO runs go down the columns.
        changes = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
        counts = ([0] if flat[0] else []) + runs.tolist()
        return {"size": [height, width], "counts": counts}
    mask[round(y0) : round(y1), round(x0) : round(x0 + (x1 - x0) * 2 / 3)] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [height, width], "counts": rle["counts"].decode()}
