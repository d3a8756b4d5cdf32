"""Host decoding of detection records: resize to the canvas, boxes in sync, bad boxes."""

from unittest import mock

import numpy as np
import pytest

from jaxvision import data
from jaxvision.data import decode as decode_lib
from jaxvision.errors import UserError


def _record(image, yxyx, labels, image_id=7, crowd=None):
    objects = {"bbox": [np.float32(b) for b in yxyx], "label": [np.int64(x) for x in labels]}
    if crowd is not None:
        objects["is_crowd"] = list(crowd)
    return {"image": image, "image/id": image_id, "objects": objects}


def test_landscape_image_is_resized_to_the_canvas_with_boxes_in_sync():
    # A 100x200 image, white rectangle rows 20..60, columns 40..120 (exclusive).
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:60, 40:120] = 255
    yxyx = [[20 / 100, 40 / 200, 60 / 100, 120 / 200]]
    example = data.DetectionDecode(64, max_boxes=3)(_record(image, yxyx, [4]))
    # Longer side 200 -> 64: scale 0.32, content 32x64 at the top-left.
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert not example["image"][32:].any()  # Zero padding below the content.
    np.testing.assert_allclose(example["scale"], [0.32, 0.32])
    np.testing.assert_allclose(example["boxes"][0], [12.8, 6.4, 38.4, 19.2], rtol=1e-6)
    np.testing.assert_array_equal(example["box_mask"], [True, False, False])
    np.testing.assert_array_equal(example["labels"], [4, 0, 0])
    assert example["boxes"][1:].sum() == 0
    assert (example["image_id"], example["height"], example["width"]) == (7, 100, 200)
    # The box matches the resized rectangle's bright pixels to within a pixel.
    ys, xs = np.nonzero(example["image"][..., 0] > 127)
    np.testing.assert_allclose(
        [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], example["boxes"][0], atol=1.0
    )
    # Back to original pixels with the scale, as the COCO evaluator does.
    np.testing.assert_allclose(example["boxes"][0] / np.tile(example["scale"], 2),
                               [40, 20, 120, 60], rtol=1e-5)


def test_image_without_objects_has_no_boxes():
    image = np.zeros((8, 8, 1), np.uint8)
    record = {"image": image, "image/id": 1, "objects": {"bbox": [], "label": []}}
    example = data.DetectionDecode(8, max_boxes=2)(record)
    assert example["boxes"].shape == (2, 4) and not example["box_mask"].any()


def test_degenerate_boxes_are_clipped_or_dropped_with_a_warning():
    image = np.zeros((10, 10, 1), np.uint8)
    yxyx = [
        [0.1, 0.1, 0.5, 0.5],  # fine
        [0.5, 0.5, 0.5, 0.9],  # zero height -> dropped
        [0.6, 0.6, 0.2, 0.9],  # negative height -> dropped
        [np.nan, 0.1, 0.2, 0.2],  # NaN -> dropped
        [-0.5, 0.5, 0.5, 1.5],  # partly outside -> clipped to [5, 0, 10, 5]
        [1.2, 1.2, 1.5, 1.5],  # wholly outside -> no area left, dropped
    ]
    decode = data.DetectionDecode(10, max_boxes=4)
    with mock.patch.object(decode_lib.logging, "warning") as warning:
        example = decode(_record(image, yxyx, [1, 2, 3, 4, 5, 6], image_id=42))
        decode(_record(image, yxyx, [1, 2, 3, 4, 5, 6], image_id=42))  # Warned once.
    np.testing.assert_array_equal(example["box_mask"], [True, True, False, False])
    np.testing.assert_array_equal(example["labels"][:2], [1, 5])
    np.testing.assert_allclose(example["boxes"][:2], [[1, 1, 5, 5], [5, 0, 10, 5]])
    assert np.isfinite(example["boxes"]).all()
    warning.assert_called_once()
    assert 42 in warning.call_args.args and 4 in warning.call_args.args


def test_more_objects_than_max_boxes_names_the_setting():
    image = np.zeros((10, 10, 1), np.uint8)
    yxyx = [[0.1, 0.1, 0.5, 0.5]] * 3
    with pytest.raises(UserError, match=r"Example 9 has 3 objects.*config\.data\.max_boxes=2"):
        data.DetectionDecode(10, max_boxes=2)(_record(image, yxyx, [0, 1, 2], image_id=9))


def test_crowd_flags_are_kept():
    image = np.zeros((10, 10, 1), np.uint8)
    yxyx = [[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]]
    example = data.DetectionDecode(10, 3)(_record(image, yxyx, [0, 1], crowd=[False, True]))
    np.testing.assert_array_equal(example["crowd"], [False, True, False])


def test_task_and_dataset_kinds_must_agree(digit_detection_dir, tmp_path):
    info = data.dataset_info("digit_detection", digit_detection_dir)
    with pytest.raises(UserError, match="detection dataset"):
        data.ClassificationDecode().check("digit_detection", info)
    classification_info = data.DatasetInfo(10, tuple("0123456789"), {}, (8, 8, 1))
    with pytest.raises(UserError, match="no object boxes"):
        data.DetectionDecode(64, 8).check("digits", classification_info)


def test_digit_detection_train_batches(digit_detection_dir):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    sharding = NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))
    iterator = data.make_train_iterator(
        "digit_detection", "train", digit_detection_dir, global_batch_size=16, seed=0,
        sharding=sharding, decode=data.DetectionDecode(128, 8),
    )
    batch = next(iterator)
    iterator.close()
    assert batch["image"].shape == (16, 128, 128, 1)
    assert batch["boxes"].shape == (16, 8, 4) and batch["labels"].shape == (16, 8)
    counts = np.asarray(batch["box_mask"]).sum(1)
    assert counts.min() >= 1 and counts.max() <= 6


def test_letterbox_puts_the_resized_image_at_the_top_left_and_returns_its_scale():
    image = np.full((30, 10, 1), 200, np.uint8)  # Portrait: height is the longer side.
    canvas, scale = data.letterbox(image, 60)
    assert canvas.shape == (60, 60, 1) and canvas.dtype == np.uint8
    np.testing.assert_array_equal(canvas[:, :20], 200)  # 30x10 -> 60x20.
    assert not canvas[:, 20:].any()
    np.testing.assert_allclose(scale, [2.0, 2.0])
    same, unit = data.letterbox(np.ones((8, 8, 3), np.uint8), 8)  # Already the canvas.
    np.testing.assert_array_equal(same, 1)
    np.testing.assert_array_equal(unit, [1.0, 1.0])
