"""Tests for jaxvision.data.coco_json: a COCO instances JSON and its image folder."""

import json
import pickle

import jax
import numpy as np
import pytest
from PIL import Image

from jaxvision import data
from jaxvision.data.coco_json import CocoJsonSource
from jaxvision.errors import UserError


def _content():
    """Sparse, unsorted category ids; images out of id order, one without objects."""
    return {
        "categories": [{"id": 90, "name": "zebra"}, {"id": 1, "name": "person"},
                       {"id": 5, "name": "car"}],
        "images": [
            {"id": 7, "file_name": "sub/b.png", "width": 20, "height": 10},
            {"id": 3, "file_name": "a.png", "width": 8, "height": 4},
            {"id": 9, "file_name": "empty.png", "width": 6, "height": 6},
        ],
        "annotations": [
            {"id": 100, "image_id": 7, "category_id": 90, "bbox": [2, 1, 10, 4], "iscrowd": 0},
            {"id": 101, "image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 2], "iscrowd": 1},
            {"id": 102, "image_id": 7, "category_id": 5, "bbox": [0.5, 5, 19.5, 5]},
        ],
    }


def _write(root, content) -> tuple[str, str]:
    """Writes `content` as ROOT/ann.json and `_content()`'s ROOT/images/; returns their paths."""
    images = root / "images"
    for entry in _content()["images"]:
        path = images / entry["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        value = entry["id"] * 10  # Each image is one value, its id * 10.
        Image.fromarray(np.full((entry["height"], entry["width"], 3), value, np.uint8)).save(path)
    annotations = root / "ann.json"
    annotations.write_text(json.dumps(content))
    return str(annotations), str(images)


@pytest.fixture
def coco(tmp_path):
    return _write(tmp_path, _content())


def test_records_in_the_tfds_coco_layout(coco):
    source = CocoJsonSource(*coco)
    assert source.category_ids == (1, 5, 90)
    assert source.class_names == ("person", "car", "zebra")
    np.testing.assert_array_equal(source.image_ids, [3, 7, 9])  # Sorted by id.
    assert len(source) == 3 and "3 images, 3 objects, 3 categories" in repr(source)

    a, b, empty = (source[i] for i in range(3))
    assert a["image"].shape == (4, 8, 3) and a["image"].dtype == np.uint8
    assert (a["image"] == 30).all() and a["image/id"] == 3
    np.testing.assert_array_equal(a["objects"]["bbox"], [[0, 0, 0.5, 0.5]])
    assert a["objects"]["is_crowd"].tolist() == [True]

    # Image 7 is 20 wide, 10 high: [x, y, w, h] = [2, 1, 10, 4] -> (1/10, 2/20, 5/10, 12/20).
    objects = b["objects"]
    assert objects["bbox"].dtype == np.float32 and objects["bbox"].shape == (2, 4)
    np.testing.assert_allclose(objects["bbox"], [[0.1, 0.1, 0.5, 0.6], [0.5, 0.025, 1, 1]])
    assert objects["label"].dtype == np.int64 and objects["label"].tolist() == [2, 1]
    assert objects["id"].dtype == np.int64 and objects["id"].tolist() == [100, 102]
    assert objects["is_crowd"].dtype == bool and objects["is_crowd"].tolist() == [False, False]
    assert (b["image"] == 70).all() and b["image"].shape == (10, 20, 3)

    assert empty["image/id"] == 9 and empty["objects"]["bbox"].shape == (0, 4)
    assert empty["objects"]["label"].shape == (0,)

    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy[1]["objects"]["bbox"], objects["bbox"])


def _error(tmp_path, change) -> str:
    content = _content()
    change(content)
    with pytest.raises(UserError) as e:
        CocoJsonSource(*_write(tmp_path, content))
    return str(e.value)


def test_json_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(UserError, match="does not exist") as e:
        CocoJsonSource(str(tmp_path / "none.json"), str(tmp_path))
    assert "none.json" in str(e.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        CocoJsonSource(str(tmp_path / "bad.json"), str(tmp_path))

    assert "has no 'categories' list" in _error(tmp_path, lambda c: c.pop("categories"))
    assert "annotation 0 has no 'bbox'" in _error(
        tmp_path, lambda c: c["annotations"][0].pop("bbox"))
    assert "image 1 has 'width' 0, not a positive integer" in _error(
        tmp_path, lambda c: c["images"][1].update(width=0))
    assert "two image entries have id 7" in _error(
        tmp_path, lambda c: c["images"][1].update(id=7))
    assert "annotation 102 has image_id 8, which is not in its 'images'" in _error(
        tmp_path, lambda c: c["annotations"][2].update(image_id=8))
    assert "annotation 100 has category_id 2, which is not in its 'categories'" in _error(
        tmp_path, lambda c: c["annotations"][0].update(category_id=2))


def test_missing_image_file_and_folder_are_named(coco, tmp_path):
    annotations, images = coco
    (tmp_path / "images" / "sub" / "b.png").unlink()
    with pytest.raises(UserError, match="'sub/b.png' .* not in the image folder") as e:
        CocoJsonSource(annotations, images)
    assert images in str(e.value) and "1 of its 3 images are missing" in str(e.value)
    with pytest.raises(UserError, match="does not exist") as e:
        CocoJsonSource(annotations, str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere") in str(e.value)


def test_split_names_both_paths(coco, tmp_path):
    info = data.dataset_info("coco_json", str(tmp_path), "ann.json::images")
    assert info.is_detection and info.image_shape is None and info.num_classes == 3
    assert info.class_names == ("person", "car", "zebra") and info.category_ids == (1, 5, 90)
    assert info.num_examples == {"ann.json::images": 3}
    absolute = f"{coco[0]}::{coco[1]}"
    assert len(data.load_source("coco_json", absolute, None)) == 3
    for split in (None, "ann.json", "ann.json::"):
        with pytest.raises(UserError, match=r"config\.data\.train_annotations and "
                                            r"config\.data\.train_images"):
            data.load_source("coco_json", split, str(tmp_path))


def test_loaders_read_coco_json(coco, tmp_path, sharding):
    decode = data.DetectionDecode(image_size=16, max_boxes=3)
    iterator = data.make_train_iterator(
        "coco_json", "ann.json::images", str(tmp_path), global_batch_size=8, seed=0,
        sharding=sharding, decode=decode,
    )
    batch = jax.tree.map(np.asarray, next(iterator))
    iterator.close()
    assert batch["image"].shape == (8, 16, 16, 3) and batch["boxes"].shape == (8, 3, 4)
    assert sorted(set(batch["image_id"].tolist())) == [3, 7, 9]

    (batch,) = data.make_eval_iterator(
        "coco_json", "ann.json::images", str(tmp_path), global_batch_size=8,
        sharding=sharding, decode=decode,
    )
    batch = jax.tree.map(np.asarray, batch)
    assert batch["mask"].tolist() == [True] * 3 + [False] * 5
    assert batch["image_id"][:3].tolist() == [3, 7, 9]
    # Image 7 (20 x 10) letterboxed to 16: 0.8 canvas pixels per pixel; box 100 is
    # x 2..12, y 1..5 in its pixels.
    np.testing.assert_allclose(batch["boxes"][1, 0], [1.6, 0.8, 9.6, 4.0], rtol=1e-6)
    assert batch["labels"][1].tolist() == [2, 1, 0] and batch["crowd"][0].tolist() == [
        True, False, False]
    assert batch["box_mask"][2].tolist() == [False] * 3  # The image without objects.
