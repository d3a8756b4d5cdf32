"""The `digits` tfds builder: scikit-learn's 1,797 real 8x8 handwritten digits.

The images ship inside scikit-learn, so the dataset builds offline in about a
second and makes end-to-end classification runs possible on any machine.

Source and citation: UCI Optical Recognition of Handwritten Digits ("optdigits"),
E. Alpaydin and C. Kaynak, 1998, doi:10.24432/C50P49 (BibTeX in `CITATION`).
"""

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from sklearn import datasets as sk_datasets
from sklearn import model_selection

CITATION = """\
@misc{alpaydin1998optdigits,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49},
}
"""

_NUM_TEST = 360  # 20% of 1,797, stratified by class.
_SPLIT_SEED = 0  # The split is part of the dataset: never change it.
_MAX_SKLEARN_VALUE = 16  # sklearn pixels are counts of set bits in 4x4 blocks.


class Digits(tfds.core.GeneratorBasedBuilder):
    """The 1,797 8x8 grayscale digits of `sklearn.datasets.load_digits`, 10 classes.

    Pixels are rescaled from 0..16 to 0..255 (rounded). The split is a fixed
    stratified one: 1,437 train and 360 test examples. "id" is the example's
    index in `load_digits()`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: stratified 1,437/360 split."
    }
    # tfds derives `code_path` with `importlib_resources`, which it declares as
    # a dependency only for Python < 3.9; naming the file directly avoids it.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        # Tensor (not Image) features: Image encoding needs TensorFlow.
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(
                        names=[str(d) for d in range(10)]
                    ),
                    "id": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=CITATION,
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict[str, np.ndarray | int]]]]:
        del dl_manager  # The data ships with scikit-learn.
        images, labels = load_digits_uint8()
        train_ids, test_ids = split_ids()
        return {
            "train": self._generate_examples(images, labels, train_ids),
            "test": self._generate_examples(images, labels, test_ids),
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, ids: np.ndarray
    ) -> Iterator[tuple[int, dict[str, np.ndarray | int]]]:
        for i in ids:
            example = {"image": images[i], "label": int(labels[i]), "id": int(i)}
            yield int(i), example


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """Returns all 1,797 digits as (uint8 [N, 8, 8, 1] in 0..255, int64 [N])."""
    raw = sk_datasets.load_digits()
    images = np.rint(raw.images * (255.0 / _MAX_SKLEARN_VALUE)).astype(np.uint8)
    return images[..., None], raw.target  # [N, 8, 8, 1], [N]


def split_ids() -> tuple[np.ndarray, np.ndarray]:
    """Returns the fixed stratified split as sorted sklearn ids: ([1437], [360]).

    Every builder made from these digits uses this split, so no test example
    of one is ever seen in training by another.
    """
    _, labels = load_digits_uint8()
    train_ids, test_ids = model_selection.train_test_split(
        np.arange(len(labels)),
        test_size=_NUM_TEST,
        stratify=labels,
        random_state=_SPLIT_SEED,
    )
    return np.sort(train_ids), np.sort(test_ids)
