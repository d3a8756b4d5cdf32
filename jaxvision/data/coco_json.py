"""Detection data from the user's own files: a COCO instances JSON and its image folder.

The model is detectron2's `register_coco_instances(name, {}, json_file,
image_root)`: the JSON's "images" name files relative to the image folder
(sub-folders allowed), its "annotations" hold xywh pixel boxes. `CocoJsonSource`
has the interface of a tfds data source (`len(source)`, `source[i]` -> a
record dict) and pickles, so grain worker processes can receive it. Records
have the layout of tfds `coco`, which `decode.DetectionDecode` reads:

  {"image": uint8 [H, W, 3] RGB, "image/id": int64 [] (the COCO image id),
   "objects": {"bbox": float32 [N, 4] normalized (ymin, xmin, ymax, xmax),
               "label": int64 [N] in 0..K-1, "is_crowd": bool [N],
               "id": int64 [N] (the COCO annotation ids)}}

`write_coco_json` writes records of that layout (from any detection dataset)
as such a JSON and a folder of PNG images.
"""

import itertools
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jaxvision.coco import (
    ImageAnnotations,
    check_entries,
    ground_truth,
    load_json,
    write_json,
)
from jaxvision.data.image_folder import check_index, scan_folder, write_png
from jaxvision.errors import UserError
from jaxvision.visualize import load_image

_LISTS = ("images", "annotations", "categories")  # What a COCO instances JSON must hold.


class CocoJsonSource:
    """The images of a COCO instances JSON, each with its annotations.

    Images are ordered by image id and all kept, with or without annotations
    (COCO evaluates those too); an image's objects keep the JSON's order.
    Categories are sorted by id and labelled 0..K-1 in that order. Boxes are
    normalized by the image's "width" and "height" in the JSON, so a
    uniformly resized copy of the images reads correctly. Construction reads
    the JSON and lists each folder the images are in once (no image is read);
    images are decoded to RGB when read.

    Attributes:
        annotations: The JSON file.
        images: The image folder.
        class_names: Category names, indexed by label.
        category_ids: The COCO category id of each label.
        image_ids: int64 [N], the COCO id of every example.
        files: [N] every example's image path, relative to `images`.
    """

    def __init__(self, annotations: str, images: str):
        self.annotations = annotations
        self.images = images
        content = load_json(annotations, "COCO annotations")
        lists = content if isinstance(content, dict) else {}
        missing = [key for key in _LISTS if not isinstance(lists.get(key), list)]
        if missing:
            raise UserError(
                f"{annotations} is not a COCO instances file: it has no {missing[0]!r} list "
                "(it needs 'images', 'annotations' and 'categories'); point "
                "config.data.train_annotations / eval_annotations at one such as "
                "annotations/instances_val2017.json."
            )
        check_entries(annotations, content["images"], "image",
                      ["id", "file_name", "width", "height"])
        check_entries(annotations, content["categories"], "category", ["id", "name"])
        check_entries(annotations, content["annotations"], "annotation",
                      ["id", "image_id", "category_id", "bbox"], optional=["iscrowd"])
        categories = _by_unique_id(annotations, content["categories"], "category")
        self.category_ids: tuple[int, ...] = tuple(c["id"] for c in categories)
        self.class_names: tuple[str, ...] = tuple(c["name"] for c in categories)
        entries = _by_unique_id(annotations, content["images"], "image")
        self.image_ids = np.array([e["id"] for e in entries], np.int64).reshape(-1)  # [N]
        self.files = [e["file_name"] for e in entries]
        _check_files(annotations, images, self.files)

        label_of = {c: label for label, c in enumerate(self.category_ids)}
        index_of = {e["id"]: i for i, e in enumerate(entries)}
        for a in content["annotations"]:
            for key, known, kind in (("image_id", index_of, "images"),
                                     ("category_id", label_of, "categories")):
                if a[key] not in known:
                    raise UserError(
                        f"{annotations}: annotation {a['id']} has {key} {a[key]}, which is "
                        f"not in its {kind!r}; fix or drop that annotation."
                    )
        anns = sorted(content["annotations"], key=lambda a: index_of[a["image_id"]])  # Stable.
        image_index = np.array([index_of[a["image_id"]] for a in anns], np.int64)  # [A]
        # Each image's objects are rows _starts[i]:_starts[i + 1].
        self._starts = np.searchsorted(image_index, np.arange(len(entries) + 1))  # [N + 1]
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)  # [A, 4]
        sizes = np.array([(e["width"], e["height"]) for e in entries], np.float64)  # [N, 2]
        wh = sizes.reshape(-1, 2)[image_index]  # [A, 2]
        x0, y0 = (xywh[:, :2] / wh).T  # [A] each
        x1, y1 = ((xywh[:, :2] + xywh[:, 2:]) / wh).T  # [A] each
        self._objects = {
            "bbox": np.stack([y0, x0, y1, x1], axis=1).astype(np.float32),  # [A, 4]
            "label": np.array([label_of[a["category_id"]] for a in anns], np.int64),  # [A]
            "is_crowd": np.array([a.get("iscrowd", 0) == 1 for a in anns], bool),  # [A]
            "id": np.array([a["id"] for a in anns], np.int64),  # [A]
        }

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Reads example `index`; `UnreadableImage` naming the file if it does not decode."""
        i = check_index(index, len(self))
        lo, hi = self._starts[i], self._starts[i + 1]
        return {
            "image": load_image(os.path.join(self.images, self.files[i]), 3),  # [H, W, 3]
            "image/id": self.image_ids[i],
            "objects": {key: value[lo:hi] for key, value in self._objects.items()},
        }

    def __repr__(self) -> str:
        return (
            f"CocoJsonSource({self.annotations!r}, {self.images!r}: {len(self)} images, "
            f"{len(self._objects['id'])} objects, {len(self.class_names)} categories)"
        )


def write_coco_json(
    annotations_path: str, image_folder: str, records: Iterable[dict[str, Any]],
    class_names: Sequence[str], category_ids: Sequence[int] | None = None,
) -> int:
    """Writes detection records as a COCO instances JSON and its folder of PNG images.

    Records have the layout `CocoJsonSource` reads back (tfds `coco`'s): "image"
    uint8 [H, W, 1] (written as grey) or [H, W, 3], "image/id" (unique),
    "objects" with "bbox" [N, 4] normalized yxyx, "label" [N] and optionally
    "is_crowd" [N] (other fields, such as masks, are not written). Each image
    becomes `image_folder/<image id:06d>.png`; the JSON (`coco.ground_truth`,
    plus each image's "file_name") holds xywh pixel boxes rounded to 0.01 px
    and annotation ids numbered from 1. Read back, boxes equal the records' to
    that rounding, and labels equal theirs when `category_ids` increase.

    Args:
        annotations_path: The JSON file to write (its folder is created).
        image_folder: The folder for the images (created if missing).
        records: The images with their objects, consumed one at a time.
        class_names: [C] the name of each label.
        category_ids: [C] distinct COCO category ids of the labels (e.g. sparse,
            as COCO's 1..90); None means label + 1.

    Returns:
        The number of images written.
    """
    if category_ids is not None and (
            len(category_ids) != len(class_names) or len(set(category_ids)) != len(category_ids)):
        raise UserError(
            f"category_ids {list(category_ids)} are not {len(class_names)} distinct ids, one "
            "per class name; pass one id per class, or None for label + 1."
        )
    entries, files, seen = [], [], set()
    for record in records:
        image = np.asarray(record["image"])  # [H, W, C]
        image_id = int(record["image/id"])
        if image_id in seen:
            raise UserError(
                f"Two records have image id {image_id}; give every image its own "
                "'image/id', as its file and annotations are named by it."
            )
        seen.add(image_id)
        height, width = image.shape[:2]
        objects = record["objects"]
        yxyx = np.asarray(objects["bbox"], np.float64).reshape(-1, 4)  # [N, 4] normalized
        boxes = yxyx[:, [1, 0, 3, 2]] * [width, height, width, height]  # [N, 4] xyxy pixels
        labels = np.asarray(objects["label"], np.int64).reshape(-1)  # [N]
        crowd = np.asarray(objects.get("is_crowd", np.zeros(len(labels), bool)), bool)  # [N]
        files.append(f"{image_id:06d}.png")
        write_png(os.path.join(image_folder, files[-1]), image)
        entries.append(ImageAnnotations(image_id, height, width, boxes, labels, crowd))
    content = ground_truth(entries, class_names, category_ids)
    for entry, file_name in zip(content["images"], files, strict=True):
        entry["file_name"] = file_name
    try:
        os.makedirs(image_folder, exist_ok=True)  # Also when there are no images.
        write_json(annotations_path, content)
    except OSError as e:
        raise UserError(
            f"Cannot write {annotations_path} ({e}); choose a writable folder."
        ) from e
    return len(files)


def _by_unique_id(path: str, entries: list[dict], kind: str) -> list[dict]:
    """`entries` sorted by "id"; UserError naming an id two of them share."""
    entries = sorted(entries, key=lambda e: e["id"])
    for a, b in itertools.pairwise(entries):
        if a["id"] == b["id"]:
            raise UserError(
                f"{path}: two {kind} entries have id {a['id']}; give every {kind} its own id."
            )
    return entries


def _check_files(path: str, folder: str, files: list[str]) -> None:
    """UserError naming the first of `files` not in `folder`; lists each sub-folder once."""
    if not os.path.isdir(folder):
        raise UserError(
            f"Image folder {folder!r} of {path} does not exist or is not a folder; set "
            "config.data.train_images / eval_images to the folder the JSON's file_name "
            "paths are relative to."
        )
    listed: dict[str, set[str]] = {}  # Sub-folder -> the names in it.
    missing = []
    for name in files:
        sub, base = os.path.split(name)
        if sub not in listed:
            directory = os.path.join(folder, sub)
            listed[sub] = {e.name for e in scan_folder(directory)} if os.path.isdir(
                directory) else set()
        if base not in listed[sub]:
            missing.append(name)
    if missing:
        raise UserError(
            f"Image file {missing[0]!r} of {path} is not in the image folder {folder!r} "
            f"({len(missing)} of its {len(files)} images are missing); set "
            "config.data.train_images / eval_images to the folder the JSON's file_name "
            "paths are relative to."
        )
