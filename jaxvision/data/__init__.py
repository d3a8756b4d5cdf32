"""Data: tfds builders and sources, grain loaders, on-device augmentation.

Importing this package registers jaxvision's own tfds builders (e.g. "digits").
"""

from jaxvision.data import digits  # noqa: F401 - registers the "digits" builder.
from jaxvision.data.augment import preprocess_for_eval, preprocess_for_train
from jaxvision.data.datasets import (
    BUILTIN_DATASETS,
    DatasetInfo,
    dataset_info,
    load_source,
    prepare,
)
from jaxvision.data.loader import TrainIterator, make_eval_iterator, make_train_iterator

__all__ = [
    "BUILTIN_DATASETS",
    "DatasetInfo",
    "TrainIterator",
    "dataset_info",
    "load_source",
    "make_eval_iterator",
    "make_train_iterator",
    "prepare",
    "preprocess_for_eval",
    "preprocess_for_train",
]
