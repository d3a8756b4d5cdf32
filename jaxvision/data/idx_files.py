"""Classification data in the IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST.

A split is two files in one folder, gzipped or not (told by a ".gz" suffix):
`*-images-idx3-ubyte[.gz]` (uint8 [N, H, W]) and `*-labels-idx1-ubyte[.gz]`
(uint8 [N]). `IdxSource` has the interface of a tfds data source
(`len(source)`, `source[i]` -> a record dict) and pickles, so grain worker
processes can receive it. Records are {"image": uint8 [H, W, 1], "label":
int32 []}.

The IDX format (big-endian): a magic number 0x000008DD (0x08: unsigned
bytes; DD: the number of dimensions), DD uint32 sizes, then the values.
EMNIST stores every image transposed (its writing runs down the rows); it is
read as stored, so transpose it yourself if you want upright characters.
`write_idx` writes a split with MNIST's file names.
"""

import gzip
import math
import os
import reprlib
import zlib
from collections.abc import Sequence

import numpy as np

from jaxvision.data.image_folder import check_index, scan_folder
from jaxvision.errors import UserError

# The file name endings of a split's files, by split (MNIST names its test
# files t10k-*, EMNIST emnist-<set>-test-*); each may also end in ".gz".
_NAME_ENDINGS = {
    "train": (("train-images-idx3-ubyte",), ("train-labels-idx1-ubyte",)),
    "test": (
        ("t10k-images-idx3-ubyte", "test-images-idx3-ubyte"),
        ("t10k-labels-idx1-ubyte", "test-labels-idx1-ubyte"),
    ),
}
SPLITS = tuple(_NAME_ENDINGS)


class IdxSource:
    """The images and labels of one split of an IDX folder, read at construction.

    Both arrays are read whole (MNIST's train images are 47 MB) and kept in
    memory, so records are slices of them.

    Attributes:
        directory: The folder.
        split: "train" or "test".
        images_file, labels_file: The split's two files (paths).
        images: uint8 [N, H, W], as stored.
        labels: uint8 [N].
    """

    def __init__(self, directory: str, split: str):
        self.directory = directory
        self.split = split
        if split not in _NAME_ENDINGS:
            raise UserError(
                f"IDX split {split!r} is not one of {list(SPLITS)}; set "
                "config.data.train_split / eval_split to 'train' or 'test'."
            )
        if not os.path.isdir(directory):
            raise UserError(
                f"IDX folder {directory!r} does not exist or is not a folder; set "
                "config.data.path to the folder holding the *-images-idx3-ubyte[.gz] "
                "and *-labels-idx1-ubyte[.gz] files."
            )
        names = sorted(
            entry.name for entry in scan_folder(directory)
            if entry.is_file() and not entry.name.startswith(".")
        )  # fmt: skip
        image_endings, label_endings = _NAME_ENDINGS[split]
        self.images_file = _find(directory, names, split, image_endings, "images")
        self.labels_file = _find(directory, names, split, label_endings, "labels")
        self.images = _read_idx(self.images_file, 3)  # [N, H, W]
        self.labels = _read_idx(self.labels_file, 1)  # [N]
        if len(self.images) != len(self.labels):
            raise UserError(
                f"{self.images_file} holds {len(self.images)} images but "
                f"{self.labels_file} holds {len(self.labels)} labels; use the images and "
                "labels files of one dataset and split."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Example `index`: its image as stored, [H, W, 1], and its label."""
        i = check_index(index, len(self))
        return {"image": self.images[i, :, :, None], "label": np.int32(self.labels[i])}

    def __repr__(self) -> str:
        return f"IdxSource({self.directory!r}, {self.split!r}: {len(self)} images)"


def write_idx(
    directory: str, split: str, images: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[int], gzip: bool = False,
) -> tuple[str, str]:
    """Writes one split as MNIST's two IDX files, `{prefix}-images-idx3-ubyte[.gz]` and
    `{prefix}-labels-idx1-ubyte[.gz]`, prefix "train" or "t10k" (MNIST's name for "test").

    Args:
        directory: The folder (created if missing); it must not hold other files
            of the split, which `IdxSource` would also match.
        split: "train" or "test".
        images: uint8 [N, H, W] or [N, H, W, 1] (grey, all of one size), or N
            such images.
        labels: [N] ints in [0, 255].
        gzip: Whether to gzip both files (".gz").

    Returns:
        The paths of the images file and the labels file.
    """
    if split not in _NAME_ENDINGS:
        raise UserError(f"IDX split {split!r} is not one of {list(SPLITS)}; name it one of those.")
    sizes = sorted({np.shape(image) for image in images}) if not isinstance(
        images, np.ndarray) else []
    if len(sizes) > 1:
        raise UserError(
            f"IDX files hold images of one size, and these have {len(sizes)} sizes "
            f"({reprlib.repr(sizes)}); resize them first or write an image folder instead."
        )
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]  # [N, H, W]
    if images.dtype != np.uint8 or images.ndim != 3:
        raise UserError(
            f"IDX images must be uint8 [N, H, W] or [N, H, W, 1] (grey), not {images.dtype} "
            f"{list(images.shape)}; convert them to 8-bit grey or write an image folder instead."
        )
    if (labels.shape != images.shape[:1] or labels.dtype.kind not in "iu"
            or (labels.size and not 0 <= labels.min() <= labels.max() <= 255)):
        raise UserError(
            f"IDX labels must be {len(images)} integers in [0, 255], one per image; got "
            f"{labels.dtype} {list(labels.shape)}."
        )
    suffix = ".gz" if gzip else ""
    names = [endings[0] + suffix for endings in _NAME_ENDINGS[split]]  # MNIST's names.
    endings = tuple(e + gz for group in _NAME_ENDINGS[split] for e in group for gz in ("", ".gz"))
    if os.path.isdir(directory):
        others = sorted(
            entry.name for entry in scan_folder(directory)
            if entry.name.endswith(endings) and entry.name not in names
        )  # fmt: skip
        if others:
            raise UserError(
                f"IDX folder {directory!r} already holds {', '.join(others)} for split "
                f"{split!r}, which would be read instead of or beside the new files; "
                "remove them or write to another folder."
            )
    os.makedirs(directory, exist_ok=True)
    images_file, labels_file = (os.path.join(directory, name) for name in names)
    _write_idx_file(images_file, images)
    _write_idx_file(labels_file, labels.astype(np.uint8))
    return images_file, labels_file


def _find(
    directory: str, names: list[str], split: str, endings: tuple[str, ...], what: str
) -> str:
    """The one file of `names` ending in one of `endings` (+ ".gz"); UserError otherwise.

    A file present both gzipped and not counts once, as the uncompressed one.
    """
    matches = [name for name in names if name.endswith(endings)]
    matches += [name for name in names if name.endswith(tuple(e + ".gz" for e in endings))
                and name[: -len(".gz")] not in matches]
    patterns = " or ".join(f"*{e}[.gz]" for e in endings)
    if not matches:
        raise UserError(
            f"IDX folder {directory!r} has no {what} file for split {split!r} (looked for "
            f"{patterns}; it holds {reprlib.repr(names)}); put the dataset's IDX files "
            "there or set config.data.path to the folder holding them."
        )
    if len(matches) > 1:
        raise UserError(
            f"IDX folder {directory!r} has several {what} files for split {split!r} "
            f"({', '.join(matches)}); keep one dataset per folder (e.g. one EMNIST set), "
            "moving the others to folders of their own."
        )
    return os.path.join(directory, matches[0])


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file with `ndim` dimensions; UserError naming the file if not."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            content = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
        raise UserError(
            f"Cannot read IDX file {path} ({e}); download it again or check its permissions."
        ) from e
    magic = 0x800 + ndim  # 0x08: unsigned bytes.
    found = int.from_bytes(content[:4], "big")
    if found != magic:
        raise UserError(
            f"{path} is not an IDX file of {ndim}-D uint8 data (its magic number is "
            f"{found:#010x}, not {magic:#010x}); use the dataset's original "
            "*-idx3-ubyte / *-idx1-ubyte files."
        )
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(content[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    size = header + math.prod(shape)  # A cut header makes it larger than the file.
    if len(content) != size:
        raise UserError(
            f"IDX file {path} is truncated or damaged: it holds {len(content)} bytes where "
            f"its header says {size}; download it again."
        )
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape)


def _write_idx_file(path: str, array: np.ndarray) -> None:
    """Writes uint8 `array` as an IDX file, gzipped if `path` ends in ".gz"."""
    header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(
        size.to_bytes(4, "big") for size in array.shape
    )  # Magic 0x000008DD (0x08: unsigned bytes; DD: dimensions), then the sizes.
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
            f.write(header + np.ascontiguousarray(array).tobytes())
    except OSError as e:
        raise UserError(f"Cannot write IDX file {path} ({e}); choose a writable folder.") from e
