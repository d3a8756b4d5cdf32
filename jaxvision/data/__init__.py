"""Data: tfds builders and sources, host decoding, grain loaders, on-device augmentation.

Importing this package registers jaxvision's own tfds builders ("digits",
"digit_detection").
"""

from jaxvision.data import digit_detection, digits  # noqa: F401 - registers builders.
from jaxvision.data.augment import preprocess_for_eval, preprocess_for_train
from jaxvision.data.datasets import (
    BUILTIN_DATASETS,
    DatasetInfo,
    dataset_info,
    load_source,
    prepare,
)
from jaxvision.data.decode import (
    ClassificationDecode,
    Decode,
    DetectionDecode,
    letterbox,
    load_coco_segmentations,
)
from jaxvision.data.loader import TrainIterator, make_eval_iterator, make_train_iterator

__all__ = [
    "BUILTIN_DATASETS",
    "ClassificationDecode",
    "DatasetInfo",
    "Decode",
    "DetectionDecode",
    "TrainIterator",
    "dataset_info",
    "letterbox",
    "load_coco_segmentations",
    "load_source",
    "make_eval_iterator",
    "make_train_iterator",
    "prepare",
    "preprocess_for_eval",
    "preprocess_for_train",
]
