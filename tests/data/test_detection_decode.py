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


# Instance masks.


def _id_record(instances, yxyx, image_id=3, crowd=None):
    """A record of a black image the size of the uint8 [H, W] id map `instances`."""
    height, width = instances.shape
    record = _record(np.zeros((height, width, 1), np.uint8), yxyx, [0] * len(yxyx),
                     image_id=image_id, crowd=crowd)
    record["instances"] = instances[..., None]
    return record


def test_mask_cells_are_on_when_the_object_covers_at_least_half_of_them():
    # 8x8 image, canvas 8 (no resize), G = 2. Object 1: box x 1..4, y 0..3, so
    # cells of 1.5 x 1.5 = 2.25 px: columns x 1..2.5 | 2.5..4, rows y 0..1.5 |
    # 1.5..3; a cell is on from 1.125 px covered.
    ids = np.zeros((8, 8), np.uint8)
    ids[0, 0] = 1  # Left of the box: ignored.
    ids[0, 1] = 1  # 1 px of cell (0, 0): off.
    ids[0, 3] = 1  # 1 px of cell (0, 1) ...
    ids[1, 3] = 1  # ... + y 1..1.5 (0.5 px): 1.5, on; cell (1, 1) gets 0.5: off.
    # Object 2: box x 4..8, y 4..6: cells of 2 x 1 px, on from 1 px covered.
    ids[4, 4] = 2  # Cell (0, 0): exactly half, on.
    ids[5, 7] = 2  # Cell (1, 1): exactly half, on.
    yxyx = [[0, 1 / 8, 3 / 8, 4 / 8], [4 / 8, 4 / 8, 6 / 8, 1]]
    decode = data.DetectionDecode(8, max_boxes=3, mask_size=2)
    example = decode(_id_record(ids, yxyx))
    assert example["masks"].dtype == np.uint8 and example["masks"].shape == (3, 2, 2)
    np.testing.assert_array_equal(example["masks"], [[[0, 1], [0, 0]], [[1, 0], [0, 1]],
                                                     [[0, 0], [0, 0]]])  # Row 3: padding.
    # x 2..3, y 1..2 adds 0.25 px to each cell of object 1: (0, 0) reaches 1.25.
    ids[1, 2] = 1
    example = decode(_id_record(ids, yxyx))
    np.testing.assert_array_equal(example["masks"][0], [[1, 1], [0, 0]])


def test_masks_follow_the_letterbox_and_the_kept_boxes():
    # A 4x8 image on a 16 canvas (scale 2). Object 1 (id 1): box x 2..6, y 0..4,
    # ink in its top-left quarter. Object 2 has no area (dropped, mask too).
    # Object 3 (id 3, crowd): box x 0..2, y 2..4, ink in its right column.
    ids = np.zeros((4, 8), np.uint8)
    ids[0:2, 2:4] = 1
    ids[2:4, 1] = 3
    yxyx = [[0, 0.25, 1, 0.75], [0.5, 0.5, 0.5, 0.75], [0.5, 0, 1, 0.25]]
    example = data.DetectionDecode(16, max_boxes=3, mask_size=2)(
        _id_record(ids, yxyx, crowd=[False, False, True])
    )
    np.testing.assert_allclose(example["boxes"][:2], [[4, 0, 12, 8], [0, 4, 4, 8]])
    np.testing.assert_array_equal(example["crowd"], [False, True, False])
    np.testing.assert_array_equal(example["masks"], [[[1, 0], [0, 0]], [[0, 1], [0, 1]],
                                                     [[0, 0], [0, 0]]])


def test_mask_size_zero_adds_no_masks():
    ids = np.ones((8, 8), np.uint8)
    example = data.DetectionDecode(8, max_boxes=1)(_id_record(ids, [[0, 0, 1, 1]]))
    assert "masks" not in example


def _exact_box_mask(mask: np.ndarray, box, size: int) -> np.ndarray:
    """Reference for whole-pixel boxes: each pixel split into size x size parts,
    so every cell holds exactly h x w parts; on when at least half are set."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = y1 - y0, x1 - x0
    parts = np.kron(mask[y0:y1, x0:x1], np.ones((size, size), int))  # [h*G, w*G]
    covered = parts.reshape(size, h, size, w).sum(axis=(1, 3))  # [G, G]
    return (2 * covered >= h * w).astype(np.uint8)


def test_digit_detection_masks_resample_each_digits_instance_pixels(digit_detection_dir):
    size = 7
    decode = data.DetectionDecode(128, max_boxes=6, mask_size=size)
    source = data.load_source("digit_detection", "test", digit_detection_dir)
    for record in source.__getitems__(list(range(40))):
        example = decode(record)
        ids = record["instances"][..., 0]  # [H, W]
        for i in np.flatnonzero(example["box_mask"]):
            expected = _exact_box_mask(ids == i + 1, example["boxes"][i], size)
            np.testing.assert_array_equal(example["masks"][i], expected)
            assert example["masks"][i].any()
        assert not example["masks"][~example["box_mask"]].any()
    info = data.dataset_info("digit_detection", digit_detection_dir)
    decode.check("digit_detection", info)  # Has masks: no segmentations needed.


def _reference_mask(segmentation, height, width) -> np.ndarray:
    """pycocotools' own decoding (as `COCO.annToMask`): bool [H, W]."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # Polygons.
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):  # Uncompressed RLE.
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {**segmentation, "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def _sampled_box_mask(mask, box, size, samples=16) -> np.ndarray:
    """Approximate reference: the fraction of samples x samples points per cell inside."""
    x0, y0, x1, y1 = box
    steps = (np.arange(size * samples) + 0.5) / (size * samples)  # [G*n]
    ys = np.floor(y0 + steps * (y1 - y0)).astype(int)
    xs = np.floor(x0 + steps * (x1 - x0)).astype(int)
    inside = mask[ys[:, None], xs[None, :]].reshape(size, samples, size, samples)
    return (inside.mean(axis=(1, 3)) >= 0.5).astype(np.uint8)


def test_coco_masks_come_from_the_instances_json(coco_dir, coco_annotations):
    size = 14
    kinds = set()
    for split, path in coco_annotations.items():
        segmentations = data.load_coco_segmentations(path)
        decode = data.DetectionDecode(64, max_boxes=4, mask_size=size,
                                      segmentations=segmentations, segmentations_file=path)
        decode.check("coco/2017", data.dataset_info("coco/2017", coco_dir))
        source = data.load_source("coco/2017", split, coco_dir)
        for record in source.__getitems__(list(range(len(source)))):
            example = decode(record)
            height, width = int(example["height"]), int(example["width"])
            for i in np.flatnonzero(example["box_mask"]):
                segmentation = segmentations[int(record["objects"]["id"][i])]
                kinds.add(type(segmentation).__name__ + (
                    type(segmentation["counts"]).__name__ if isinstance(segmentation, dict)
                    else ""))
                box = example["boxes"][i] / np.tile(example["scale"], 2)  # Original px.
                expected = _sampled_box_mask(
                    _reference_mask(segmentation, height, width), box, size)
                assert example["masks"][i].any()
                assert (example["masks"][i] == expected).mean() > 0.95
            assert not example["masks"][~example["box_mask"]].any()
    assert kinds == {"list", "dictlist", "dictstr"}  # Polygons, both RLEs.


def test_objects_without_a_mask_source_name_what_to_set(coco_dir, coco_annotations):
    source = data.load_source("coco/2017", "validation", coco_dir)
    record = next(r for r in source if len(r["objects"]["id"]))
    image_id, first = int(record["image/id"]), int(record["objects"]["id"][0])
    with pytest.raises(UserError, match=rf"Example {image_id} has no instance map.*"
                                        r"config\.data\.train_annotations"):
        data.DetectionDecode(64, 4, mask_size=7)(record)
    path = coco_annotations["train"]  # Another split's annotations.
    decode = data.DetectionDecode(64, 4, mask_size=7, segmentations_file=path,
                                  segmentations=data.load_coco_segmentations(path))
    with pytest.raises(UserError, match=rf"Example {image_id}: annotation {first} has no "
                                        rf"segmentation in {path}; set config\.data"):
        decode(record)
    info = data.dataset_info("coco/2017", coco_dir)
    assert not info.has_instance_masks
    with pytest.raises(UserError, match=r"'coco/2017' has no instance masks; set "
                                        r"config\.data\.train_annotations"):
        data.DetectionDecode(64, 4, mask_size=7).check("coco/2017", info)
    data.DetectionDecode(64, 4).check("coco/2017", info)  # No masks asked for.


@pytest.mark.parametrize("segmentation, problem", [
    ([[1, 1, 4, 1]], "each polygon"),
    ([], "polygon list is empty"),
    ({"counts": [0, 16], "size": [8, 2]}, r"RLE size is \[8, 2\]"),
    ({"counts": [0, 15], "size": [4, 4]}, "add up to 15, not 16"),
    ({"counts": "zzzz", "size": [4, 4]}, "pycocotools cannot decode it"),
    ({"counts": "", "size": [4, 4]}, "run lengths do not cover the image"),
    ("not a mask", "neither a list of polygons nor a dict"),
])
def test_a_segmentation_that_does_not_parse_names_its_annotation(segmentation, problem):
    record = _record(np.zeros((4, 4, 1), np.uint8), [[0, 0, 1, 1]], [0], image_id=5)
    record["objects"]["id"] = [np.int64(77)]
    decode = data.DetectionDecode(4, 1, mask_size=2, segmentations={77: segmentation},
                                  segmentations_file="ann.json")
    with pytest.raises(UserError, match=rf"annotation 77 in ann\.json is not a COCO polygon "
                                        rf"list or RLE of its 4x4 image \(.*{problem}"):
        decode(record)


def test_load_coco_segmentations_errors_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match="Cannot read COCO annotations from"):
        data.load_coco_segmentations(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="Cannot read COCO annotations from"):
        data.load_coco_segmentations(str(bad))
    for content in ("[]", '{"images": []}', '{"annotations": [{"id": 1}]}'):
        bad.write_text(content)
        with pytest.raises(UserError, match="is not a COCO instances file"):
            data.load_coco_segmentations(str(bad))
    bad.write_text('{"annotations": [{"id": 4, "segmentation": [[0, 0, 1, 0, 1, 1]]}]}')
    assert data.load_coco_segmentations(str(bad)) == {4: [[0, 0, 1, 0, 1, 1]]}
