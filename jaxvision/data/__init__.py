"""Data: tfds builders and sources, host decoding, grain loaders, on-device augmentation.

Importing this package registers jaxvision's own tfds builders ("digits",
"digit_detection", "digit_instances", "moving_digits").
"""

from jaxvision.data import (  # noqa: F401 - registers builders.
    digit_detection,
    digit_instances,
    digits,
    moving_digits,
)
from jaxvision.data.augment import preprocess_for_eval, preprocess_for_train
from jaxvision.data.datasets import (
    BUILTIN_DATASETS,
    FILE_DATASETS,
    DatasetInfo,
    SequenceMetadata,
    dataset_info,
    load_source,
    prepare,
    sequence_metadata,
    verification_pairs,
)
from jaxvision.data.decode import (
    ClassificationDecode,
    Decode,
    DetectionDecode,
    RecognitionDecode,
    TrackingDecode,
    letterbox,
    load_coco_segmentations,
)
from jaxvision.data.loader import TrainIterator, make_eval_iterator, make_train_iterator

__all__ = [
    "BUILTIN_DATASETS",
    "FILE_DATASETS",
    "ClassificationDecode",
    "DatasetInfo",
    "Decode",
    "DetectionDecode",
    "RecognitionDecode",
    "SequenceMetadata",
    "TrackingDecode",
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
    "sequence_metadata",
    "verification_pairs",
]
