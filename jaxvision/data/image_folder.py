"""Classification data from the user's own files: torchvision's ImageFolder layout.

`ImageFolderSource` reads one split, `path/<class_name>/<image>`, with the
interface of a tfds data source (`len(source)`, `source[i]` -> a record dict),
so it loads through the same grain loader; it pickles, so grain worker
processes can receive it. Records are {"image": uint8 [H, W, 3] RGB, "label":
int32 []}.

`write_image_folder` writes images and labels in this layout (as PNGs), so
any classification dataset can be turned into one. The listing of class
folders (`class_folders`) is shared with `identity_files.IdentityFolderSource`,
the same layout with identities.
"""

import itertools
import operator
import os
from collections.abc import Iterable, Sequence

import numpy as np

from jaxvision.errors import UserError
from jaxvision.visualize import load_image, save_image

# Image files of a class (or identity) folder, recognised by suffix (any case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageFolderSource:
    """One split in torchvision's ImageFolder layout, `path/<class_name>/<image>`.

    Classes are the sub-folder names, sorted, labelled 0..N-1; a class's
    images are sorted by file name; examples are ordered class by class.
    Images are the files ending in `IMAGE_SUFFIXES` (any case); other files,
    names starting with "." and files directly in `path` are ignored. Every
    class folder must hold an image: an empty one would silently shift the
    labels of the classes after it. Listing reads directories only, never an
    image; images are decoded to RGB (any mode or size) when read.

    Attributes:
        path: The split folder.
        class_names: Class (sub-folder) names, indexed by label.
        labels: int32 [N], the label of every example.
        files: [N] every example's image path, relative to `path`.
    """

    def __init__(self, path: str):
        self.path = path
        if not os.path.isdir(path):
            root = os.path.dirname(os.path.normpath(path))
            splits = sub_folders(root) if os.path.isdir(root) else []
            raise UserError(
                f"Image folder split {path!r} does not exist or is not a folder; "
                + (f"{root!r} holds the splits {splits}: set config.data.train_split / "
                   "eval_split to one of them." if splits else
                   "set config.data.path to the folder holding the splits "
                   "(ROOT/<split>/<class_name>/<image>).")
            )
        folders = class_folders(path)
        if not folders:
            raise UserError(
                f"Image folder {path!r} has no class sub-folders; put each class's images "
                "in a sub-folder named after the class (path/<class_name>/<image>)."
            )
        empty = [name for name, images in folders if not images]
        if empty:
            raise UserError(
                f"Class folder {os.path.join(path, empty[0])!r} holds no images "
                f"({', '.join(IMAGE_SUFFIXES)}), which would shift the labels of the "
                "classes after it; add its images or remove the folder"
                + (f" (also empty: {empty[1:]})." if len(empty) > 1 else ".")
            )
        self.class_names: tuple[str, ...] = tuple(name for name, _ in folders)
        counts = [len(images) for _, images in folders]
        self.labels = np.repeat(np.arange(len(folders), dtype=np.int32), counts)  # [N]
        self.files = [os.path.join(name, image) for name, images in folders for image in images]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Reads example `index`; `UnreadableImage` naming the file if it does not decode."""
        i = check_index(index, len(self))
        image = load_image(os.path.join(self.path, self.files[i]), 3)  # [H, W, 3]
        return {"image": image, "label": self.labels[i]}

    def __repr__(self) -> str:
        return (
            f"ImageFolderSource({self.path!r}: {len(self.class_names)} classes, "
            f"{len(self)} images)"
        )


def write_image_folder(
    folder: str, images: Iterable[np.ndarray], labels: Iterable[int], class_names: Sequence[str]
) -> int:
    """Writes one split in the ImageFolder layout: `folder/<class_name>/<index:05d>.png`.

    `index` is the image's position in `images`, so a class's files sort in
    input order. Images are consumed one at a time (iterables of any length).
    Only classes that have an image get a folder: an empty class folder is
    refused by `ImageFolderSource`, as it would shift the labels after it.
    Read back, labels index the sorted names of the classes written, so they
    equal `labels` when `class_names` is sorted and every class has an image.

    Args:
        folder: The split folder (e.g. ROOT/train); empty or not there yet.
        images: uint8 [H, W, 1] (written as grey, PIL mode L) or [H, W, 3]
            (RGB) each; sizes may vary.
        labels: One int in [0, len(class_names)) per image.
        class_names: [C] the folder name of each label.

    Returns:
        The number of images written.
    """
    for name in class_names:
        if not name or name.startswith(".") or "/" in name or os.sep in name:
            raise UserError(
                f"Class name {name!r} cannot be a folder name (empty, starting with '.', or "
                "holding a path separator); rename the class."
            )
    if len(set(class_names)) != len(class_names):
        raise UserError(
            f"Class names {list(class_names)} repeat a name, so two classes would share a "
            "folder; give every class its own name."
        )
    if os.path.isdir(folder) and scan_folder(folder):
        raise UserError(
            f"Image folder split {folder!r} is not empty; write to a new folder (or delete "
            "it), so that no earlier image joins the split."
        )
    missing = object()
    count = 0
    for index, (image, label) in enumerate(
        itertools.zip_longest(images, labels, fillvalue=missing)
    ):
        if image is missing or label is missing:
            raise UserError(
                f"write_image_folder got {index} images and labels, then only "
                f"{'labels' if image is missing else 'images'}; pass one label per image."
            )
        label = operator.index(label)
        if not 0 <= label < len(class_names):
            raise UserError(
                f"Image {index} has label {label}, outside [0, {len(class_names)}) of "
                "class_names; pass a name for every class."
            )
        write_png(os.path.join(folder, class_names[label], f"{index:05d}.png"), image)
        count = index + 1
    return count


def write_png(path: str, image: np.ndarray) -> None:
    """Writes uint8 [H, W, 1] `image` as a grey (mode L) PNG, or [H, W, 3] as RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise UserError(
            f"Image for {path!r} is {image.dtype} {list(image.shape)}, not uint8 [H, W, 1] "
            "or [H, W, 3]; convert it to 8-bit grey or RGB first."
        )
    save_image(path, image)


def sub_folders(path: str) -> list[str]:
    """The sub-folder names of `path`, sorted, those starting with "." left out."""
    return sorted(
        entry.name for entry in scan_folder(path)
        if not entry.name.startswith(".") and entry.is_dir()
    )  # fmt: skip


def class_folders(path: str) -> list[tuple[str, list[str]]]:
    """(sub-folder name, its image file names) for each sub-folder of `path`, all sorted.

    Images are the files ending in `IMAGE_SUFFIXES` (any case); names
    starting with "." (such as macOS `._name.jpg` companions) are left out.
    Reads directories only (os.scandir).
    """
    return [
        (folder, sorted(
            entry.name for entry in scan_folder(os.path.join(path, folder))
            if entry.name.lower().endswith(IMAGE_SUFFIXES)
            and not entry.name.startswith(".") and entry.is_file()
        ))
        for folder in sub_folders(path)
    ]  # fmt: skip


def check_index(index: int, length: int) -> int:
    """`index` as an int in [0, length) (negative counts from the end); else IndexError."""
    i = operator.index(index)
    if not -length <= i < length:
        raise IndexError(f"Index {i} is out of range for a source of {length} examples.")
    return i % length


def scan_folder(folder: str) -> list[os.DirEntry]:
    """os.scandir(folder) as a list; UserError if the folder cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError as e:
        raise UserError(
            f"Cannot list folder {folder!r} ({e}); check that it exists and is readable."
        ) from e
