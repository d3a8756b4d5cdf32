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
def coco_dir(tmp_path_factory) -> str:
    """A tfds data dir holding a tiny prepared `coco/2017` of random images.

    Written by a builder with tfds coco's exact features (JPEG images of
    varying size, normalized yxyx boxes, 80 classes, crowd flags), so reading
    it goes through the same path as the real, prepared COCO.
    """
    import io

    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

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
            return {"train": self._generate_examples(16, 0),
                    "validation": self._generate_examples(8, 1000)}

        def _generate_examples(self, num, first_id):
            rng = np.random.default_rng(first_id)
            for image_id in range(first_id, first_id + num):
                height, width = rng.integers(40, 100, 2)
                jpeg = io.BytesIO()
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(image).save(jpeg, "JPEG")
                k = int(rng.integers(0, 4))  # Some images have no objects.
                y0, x0 = rng.uniform(0, 0.5, (2, k))
                yield image_id, {
                    "image": jpeg.getvalue(),
                    "image/filename": f"{image_id:012d}.jpg",
                    "image/id": image_id,
                    "objects": {
                        "area": [100] * k,
                        "bbox": [tfds.features.BBox(y0[j], x0[j], y0[j] + 0.4, x0[j] + 0.3)
                                 for j in range(k)],
                        "id": list(range(k)),
                        "is_crowd": [j == 2 for j in range(k)],
                        "label": list(rng.integers(0, 80, k)),
                    },
                }

    data_dir = str(tmp_path_factory.mktemp("tfds_coco"))
    FakeCoco(data_dir=data_dir).download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )
    return data_dir
