"""Face-recognition data from the user's own files: identity folders and verification `.bin`s.

Both sources have the interface of a tfds data source (`len(source)`,
`source[i]` -> a record dict), so they load through the same grain loader;
they pickle, so grain worker processes can receive them. Records are
{"image": uint8 [H, W, 3] RGB, "label": int32 [], "id": int32 [] (= i)}.

  - `IdentityFolderSource`: the CASIA-WebFace / insightface training layout,
    `path/<identity>/<image>`, one sub-folder per identity.
  - `VerificationBinSource`: insightface's verification sets (`lfw.bin`,
    `cfp_fp.bin`, `agedb_30.bin`), 2P images forming P pairs.

Verification pairs are int32 [P, 4] rows (id_a, id_b, same, fold), in 10
consecutive folds: from a `.bin` (`VerificationBinSource.pairs`) or generated
from an identity folder's labels (`folder_pairs`, LFW-style).
`write_verification_bin` writes insightface's `.bin` format.
"""

import io
import itertools
import os
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging
from PIL import Image

from jaxvision.data.image_folder import IMAGE_SUFFIXES, check_index, class_folders
from jaxvision.errors import UserError
from jaxvision.visualize import load_image, to_rgb

# How a verification `.bin` must look, quoted in its errors.
_BIN_FORMAT = (
    "a pickle of (bins, issame_list): 2P encoded JPEG/PNG images (bytes) and P bools, "
    "pair k being images 2k and 2k+1, as in insightface's lfw.bin / cfp_fp.bin / "
    "agedb_30.bin or as written by write_verification_bin"
)
_BIN_FOLDS = 10  # insightface: sklearn KFold(10, shuffle=False) over the pair order.
_NAMED = 5  # Identities named in a warning before "and N more".


class IdentityFolderSource:
    """Images in `path/<identity>/<image>`, one sub-folder per identity.

    Identities are the sub-folder names, sorted, labelled 0..N-1; an
    identity's images are sorted by file name; examples are ordered identity
    by identity. Images are the files ending in `IMAGE_SUFFIXES` (any case);
    other files, files and folders whose name starts with "." (such as macOS
    `._name.jpg` companions) and files directly in `path` are ignored. A
    sub-folder without images is skipped with a warning and gets no label.
    Listing reads directories only (`image_folder.class_folders`), never an image.

    Attributes:
        path: The folder.
        class_names: Identity (sub-folder) names, indexed by label.
        labels: int32 [N], the label of every example.
        files: [N] every example's image path, relative to `path`.
    """

    def __init__(self, path: str):
        self.path = path
        if not os.path.isdir(path):
            raise UserError(
                f"Identity folder {path!r} does not exist or is not a folder; pass a folder "
                "with one sub-folder of images per identity (path/<identity>/<image>)."
            )
        folders = class_folders(path)
        if not folders:
            raise UserError(
                f"Identity folder {path!r} has no sub-folders; put each identity's images "
                "in a sub-folder of its own (path/<identity>/<image>)."
            )
        names, files, counts, empty = [], [], [], []
        for folder, images in folders:
            if not images:
                empty.append(folder)
                continue
            names.append(folder)
            files.extend(os.path.join(folder, image) for image in images)
            counts.append(len(images))
        if not names:
            raise UserError(
                f"Identity folder {path!r} has {len(folders)} sub-folders but no images in "
                f"them; put image files ({', '.join(IMAGE_SUFFIXES)}) in "
                "path/<identity>/."
            )
        if empty:
            logging.warning(
                "Identity folder %r: skipped %d sub-folder(s) without images (they get no "
                "label): %s.", path, len(empty), _first_few(empty),
            )
        self.class_names: tuple[str, ...] = tuple(names)
        self.labels = np.repeat(np.arange(len(names), dtype=np.int32), counts)  # [N]
        self.files = files  # [N] image paths relative to `path`.

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Reads example `index`; `UnreadableImage` naming the file if it does not decode."""
        i = check_index(index, len(self))
        image = load_image(os.path.join(self.path, self.files[i]), 3)  # [H, W, 3]
        return {"image": image, "label": self.labels[i], "id": np.int32(i)}

    def __repr__(self) -> str:
        return (
            f"IdentityFolderSource({self.path!r}: {len(self.class_names)} identities, "
            f"{len(self)} images)"
        )


class VerificationBinSource:
    """An insightface verification set (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`).

    The file is a pickle of `(bins, issame_list)`: `bins` holds 2P encoded
    images (JPEG/PNG bytes; numpy uint8 buffers and bytearrays are accepted
    too) and `issame_list` P bools; pair k is images 2k and 2k + 1. It is
    read as insightface reads it, `pickle.load(f, encoding="bytes")` (the
    files were written by Python 2). Only the pickle is loaded here; images
    are decoded when read. Identities are unknown, so every label is -1.

    Security: unpickling runs code the file names. Only open `.bin` files you
    trust, such as insightface's own.

    Attributes:
        path: The file.
        name: The file name without its extension, e.g. "lfw".
    """

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path, "rb") as f:
                content = pickle.load(f, encoding="bytes")
        except OSError as e:
            raise UserError(
                f"Cannot read verification file {path!r} ({e}); pass an insightface "
                f"verification .bin: {_BIN_FORMAT}."
            ) from e
        except Exception as e:  # Unpickling garbage raises almost anything.
            raise UserError(
                f"{path!r} is not an insightface verification .bin (it does not unpickle: "
                f"{type(e).__name__}: {e}); expected {_BIN_FORMAT}."
            ) from e
        self._bins, issame = _check_bin_content(path, content)
        self._issame = issame  # bool [P]

    def __len__(self) -> int:
        return len(self._bins)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Decodes image `index`; raises UserError naming the file and index if it does not."""
        i = check_index(index, len(self))
        data = self._bins[i]
        if isinstance(data, np.ndarray):
            data = data.tobytes()
        try:
            image = load_image(io.BytesIO(data), 3)  # [H, W, 3]
        except UserError as e:
            raise UserError(
                f"Image {i} of {self.path!r} does not decode ({e.__cause__}); it is not an "
                f"insightface verification .bin, expected {_BIN_FORMAT}."
            ) from e
        return {"image": image, "label": np.int32(-1), "id": np.int32(i)}

    def pairs(self) -> np.ndarray:
        """int32 [P, 4] rows (id_a, id_b, same, fold): pair k is images (2k, 2k + 1).

        `fold` = k * 10 // P: 10 consecutive folds in pair order, as
        insightface's evaluation splits them (sklearn `KFold(10, shuffle=False)`;
        the two agree exactly when P is a multiple of 10, as in lfw, cfp_fp
        and agedb_30, where every fold holds P / 10 pairs).
        """
        num_pairs = len(self._issame)
        k = np.arange(num_pairs, dtype=np.int32)  # [P]
        fold = k * _BIN_FOLDS // num_pairs  # [P]
        return np.stack([2 * k, 2 * k + 1, self._issame.astype(np.int32), fold], axis=1)

    def __repr__(self) -> str:
        return f"VerificationBinSource({self.path!r}: {len(self._issame)} pairs)"


# What `jaxvision.data.datasets` returns for an `identity_folder` split.
IdentitySource = IdentityFolderSource | VerificationBinSource


def write_verification_bin(
    path: str,
    images: Sequence[np.ndarray],
    issame: Sequence[bool],
    format: str = "JPEG",
) -> None:
    """Writes an insightface verification `.bin` (read it with `VerificationBinSource`).

    The file is `pickle.dump((bins, issame_list), f, protocol=4)`, `bins`
    being each image encoded as bytes (JPEG at quality 95, or PNG) and
    `issame_list` a list of bools: the format of insightface's own files.

    Args:
        path: The file to write.
        images: 2P uint8 images, [H, W, 3] RGB or [H, W] / [H, W, 1] grayscale;
            pair k is images 2k and 2k + 1.
        issame: P bools, whether pair k shows one identity.
        format: "JPEG" (as insightface's files) or "PNG" (lossless).
    """
    format = format.upper()
    if format not in ("JPEG", "PNG"):
        raise ValueError(f"format must be 'JPEG' or 'PNG', got {format!r}.")
    if len(images) != 2 * len(issame):
        raise ValueError(
            f"Got {len(images)} images for {len(issame)} pairs; pass two images per pair."
        )
    bins = []
    for i, image in enumerate(images):
        try:
            rgb = to_rgb(image)  # [H, W, 3]; the sources read every image as RGB.
        except ValueError as e:
            raise ValueError(f"Image {i}: {e}") from e
        buffer = io.BytesIO()
        pil = Image.fromarray(rgb)
        pil.save(buffer, format=format, **({"quality": 95} if format == "JPEG" else {}))
        bins.append(buffer.getvalue())
    try:
        with open(path, "wb") as f:
            pickle.dump((bins, [bool(s) for s in issame]), f, protocol=4)
    except OSError as e:
        raise UserError(
            f"Cannot write verification file {path!r} ({e}); check that its folder exists "
            "and is writable."
        ) from e


def folder_pairs(
    labels: np.ndarray,
    *,
    num_folds: int = 10,
    pairs_per_fold: int = 300,
    seed: int = 0,
    name: str = "",
) -> np.ndarray:
    """LFW-style verification pairs from an identity folder's labels, seeded.

    Identities are shuffled and dealt to `num_folds` folds (identity-disjoint,
    as LFW's folds are): those with at least 2 images first, so each fold gets
    some, then those with a single image, which can only be in different
    pairs (a warning names them). Each fold gets up to `pairs_per_fold / 2`
    same pairs (two images of one of its identities, the identity drawn
    uniformly, then the two images) and as many different pairs (an image of
    each of two of its identities), with no pair twice. Folds are
    consecutive: fold 0's same pairs, its different pairs, then fold 1's, ...

    Fold sizes may be uneven and smaller than `pairs_per_fold` when
    identities have few images (a warning says so): a fold with one identity
    has no different pairs, and a fold never has more same pairs than its
    identities can form.

    Args:
        labels: int [N], the identity of each example (e.g.
            `IdentityFolderSource.labels`); example ids are indices into it.
        num_folds: Number of folds (LFW: 10).
        pairs_per_fold: Pairs per fold, half same and half different; even.
        seed: Everything is a function of (labels, arguments, seed).
        name: What the labels are of (e.g. the folder), for messages.

    Returns:
        int32 [P, 4] rows (id_a, id_b, same, fold), id_a < id_b.

    Raises:
        UserError: If fewer than `num_folds` identities have 2 or more images.
    """
    what = name or "The identity folder"
    labels = np.asarray(labels)  # [N]
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be an int [N] array, got {labels.dtype} {labels.shape}.")
    if num_folds < 2:
        raise UserError(f"folder_pairs needs num_folds >= 2, got {num_folds}.")
    if pairs_per_fold < 2 or pairs_per_fold % 2:
        raise UserError(
            f"folder_pairs needs an even pairs_per_fold >= 2 (half same, half different "
            f"pairs), got {pairs_per_fold}."
        )
    if labels.size and labels.min() < 0:
        raise UserError(
            f"{what} has examples without an identity (label < 0); verification pairs "
            "need an identity for every image, as an identity folder gives."
        )
    identities, counts = np.unique(labels, return_counts=True)  # [U], [U]
    multi, single = np.flatnonzero(counts >= 2), np.flatnonzero(counts == 1)  # indices into U
    if len(multi) < num_folds:
        raise UserError(
            f"{what} has {len(identities)} identities, {len(multi)} of them with 2 or more "
            f"images; {num_folds} identity-disjoint folds of verification pairs need at "
            f"least 2 images per identity for {num_folds} or more identities."
        )
    if len(single):
        logging.warning(
            "%s: %d identities have a single image and are used only in different pairs "
            "(labels %s).", what, len(single), _first_few([int(identities[u]) for u in single]),
        )
    # members[u]: the example ids of identity u, ascending.
    by_label = np.argsort(labels, kind="stable")  # [N]
    members = np.split(by_label, np.cumsum(counts)[:-1])  # U x [count]

    rng = np.random.default_rng(seed)
    dealt = np.concatenate([rng.permutation(multi), rng.permutation(single)])  # [U]
    rows = []
    for fold in range(num_folds):
        groups = [members[u] for u in dealt[fold::num_folds]]
        same = _same_pairs(groups, pairs_per_fold // 2, rng)
        different = _different_pairs(groups, len(same), rng)
        rows += [(a, b, 1, fold) for a, b in same] + [(a, b, 0, fold) for a, b in different]
    pairs = np.asarray(rows, np.int32).reshape(-1, 4)  # [P, 4]
    sizes = np.bincount(pairs[:, 3], minlength=num_folds)  # [num_folds]
    if sizes.min() < pairs_per_fold:
        logging.warning(
            "%s: its identities have too few images for %d pairs per fold; folds hold "
            "%d to %d pairs (%d same, %d different in all).", what, pairs_per_fold,
            sizes.min(), sizes.max(), pairs[:, 2].sum(), len(pairs) - pairs[:, 2].sum(),
        )
    return pairs


def _same_pairs(
    groups: list[np.ndarray], count: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Up to `count` distinct (a, b), a < b, both in one group."""
    groups = [g for g in groups if len(g) >= 2]
    capacity = sum(len(g) * (len(g) - 1) // 2 for g in groups)
    if capacity <= count:  # Few enough to take them all.
        every = [(int(a), int(b)) for g in groups for a, b in itertools.combinations(g, 2)]
        return [every[j] for j in rng.permutation(len(every))]
    chosen: dict[tuple[int, int], None] = {}  # Ordered, for determinism.
    while len(chosen) < count:  # Ends: more pairs exist than are taken.
        group = groups[rng.integers(len(groups))]
        a, b = group[rng.choice(len(group), 2, replace=False)]
        chosen[(int(min(a, b)), int(max(a, b)))] = None
    return list(chosen)


def _different_pairs(
    groups: list[np.ndarray], count: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Up to `count` distinct (a, b), a < b, in two different groups."""
    sizes = np.array([len(g) for g in groups])
    capacity = (sizes.sum() ** 2 - (sizes**2).sum()) // 2
    if capacity <= count:  # Few enough to take them all.
        every = [
            (int(min(a, b)), int(max(a, b)))
            for g, h in itertools.combinations(groups, 2) for a in g for b in h
        ]  # fmt: skip
        return [every[j] for j in rng.permutation(len(every))]
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < count:  # Ends: more pairs exist than are taken.
        g, h = rng.choice(len(groups), 2, replace=False)
        a, b = groups[g][rng.integers(sizes[g])], groups[h][rng.integers(sizes[h])]
        chosen[(int(min(a, b)), int(max(a, b)))] = None
    return list(chosen)


def _check_bin_content(path: str, content: Any) -> tuple[list[Any], np.ndarray]:
    """(bins, issame bool [P]) from an unpickled `.bin`; UserError if it is not one."""

    def fail(problem: str) -> UserError:
        return UserError(
            f"{path!r} is not an insightface verification .bin ({problem}); expected "
            f"{_BIN_FORMAT}."
        )

    if not isinstance(content, tuple | list) or len(content) != 2:
        kind = f"a {len(content)}-{type(content).__name__}" if isinstance(
            content, tuple | list) else f"a {type(content).__name__}"
        raise fail(f"it holds {kind}, not a (bins, issame_list) pair")
    bins, issame = content
    if not isinstance(bins, list | tuple):
        raise fail(f"its bins are a {type(bins).__name__}, not a list")
    try:
        issame = np.asarray(issame)
    except (ValueError, TypeError) as e:
        raise fail(f"its issame_list is not a list of bools: {e}") from e
    if issame.ndim != 1 or (issame.size and not (
        issame.dtype == bool or (issame.dtype.kind in "iu" and np.isin(issame, (0, 1)).all())
    )):
        raise fail(f"its issame_list is {issame.dtype} {issame.shape}, not a list of bools")
    if len(bins) != 2 * len(issame) or not len(issame):
        raise fail(
            f"it holds {len(bins)} images for {len(issame)} pairs; it needs two images "
            "per pair and at least one pair"
        )
    for i, data in enumerate(bins):
        if isinstance(data, np.ndarray):
            if data.dtype != np.uint8 or data.ndim != 1:
                raise fail(
                    f"image {i} is a {data.dtype} {data.shape} array, not encoded bytes"
                )
        elif not isinstance(data, bytes | bytearray):
            raise fail(f"image {i} is a {type(data).__name__}, not encoded bytes")
    return list(bins), issame.astype(bool)


def _first_few(names: Sequence[Any]) -> str:
    """The first `_NAMED` names, comma-separated, then "and N more"."""
    shown = ", ".join(repr(n) if isinstance(n, str) else str(n) for n in names[:_NAMED])
    return shown + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")
