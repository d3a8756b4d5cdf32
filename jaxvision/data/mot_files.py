"""Multi-object tracking data from files: MOTChallenge folders, frame folders, videos, results.

MOTChallenge (MOT17, MOT20) folders look like::

    SPLIT/SEQ/seqinfo.ini        [Sequence] name, imDir, frameRate, seqLength,
                                 imWidth, imHeight, imExt
    SPLIT/SEQ/img1/000001.jpg    one image per frame, 1-based, 6 digits
    SPLIT/SEQ/gt/gt.txt          frame,id,x,y,w,h,consider,class,visibility
    SPLIT/SEQ/det/det.txt        frame,-1,x,y,w,h,score[,-1,-1,-1]

and tracker results are `frame,id,x,y,w,h,score,-1,-1,-1` lines. In the
files (x, y) is the box's top-left corner in 1-based pixels (the top-left
pixel is (1, 1)); everything this module returns is in 0-based pixels,
boxes xyxy (`x0 = x - 1`, `x1 = x0 + w`), and `write_mot_results` adds the 1
back, so results written from boxes read here line up with the files.

`MOTSource` is a random-access source (`len`, `[i]`) of frame records with
the layout of the `moving_digits` tfds builder, so one loader and one
`TrackingDecode` serve both (see `MOTSource`). Ground truth follows
TrackEval's MOTChallenge protocol: the targets are the rows of class 1
(pedestrian) with consider flag 1; the distractor classes (2 person on
vehicle, 7 static person, 8 distractor, 12 reflection; for MOT20 also 6
non-motorized vehicle), whose matched detections evaluation discards
instead of counting them as false positives, become *ignore regions*:
objects with `is_crowd` True (the COCO convention, which detection training
and COCO evaluation already skip), visibility 0 and identity -1. Every other
row (vehicles, occluders, pedestrians with consider 0) is dropped, as
TrackEval drops it.

MOT17 ships every sequence three times (`MOT17-02-DPM`, `-FRCNN`, `-SDP`),
with identical images and ground truth and only det.txt differing: folders
that differ only by that suffix are read once, preferring `-FRCNN`.

`read_frames` reads arbitrary input to track: a folder of numbered images
or a video file (any format imageio's ffmpeg plugin or PIL reads, GIFs
included).
"""

import configparser
import dataclasses
import os
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from absl import logging

from jaxvision.errors import UserError
from jaxvision.visualize import load_image, to_rgb

CLASS_NAMES = ("pedestrian",)  # The one detection class of MOTSource records.
PEDESTRIAN = 1  # MOTChallenge gt class of the tracked targets.
# TrackEval's distractor classes: detections matched to them are not counted.
DISTRACTOR_CLASSES = (2, 7, 8, 12)  # person on vehicle, static person, distractor, reflection
MOT20_DISTRACTOR_CLASSES = (2, 6, 7, 8, 12)  # ... and non-motorized vehicle in MOT20.
# MOT17's copies of each sequence, one per public detector; the first is kept.
DETECTORS = ("FRCNN", "SDP", "DPM")
# Image files of a frame folder, recognised by suffix (any case).
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

_GT_LAYOUT = (
    "`frame,id,x,y,w,h,consider,class,visibility`: 9 comma-separated numbers, frame "
    "and id whole numbers, frame >= 1 (MOTChallenge gt.txt)"
)
_DET_LAYOUT = (
    "`frame,-1,x,y,w,h,score` optionally followed by `,-1,-1,-1`: 7 to 10 "
    "comma-separated numbers, frame a whole number >= 1 (MOTChallenge det.txt)"
)
_RESULT_LAYOUT = (
    "`frame,id,x,y,w,h,score,-1,-1,-1`: 7 to 10 comma-separated numbers, frame and "
    "id whole numbers, frame >= 1 (MOTChallenge results)"
)
_SEQINFO_KEYS = ("name", "imDir", "frameRate", "seqLength", "imWidth", "imHeight", "imExt")
_MOT_SPLIT = re.compile(r"^(?P<path>.*?)\[(?P<start>\d+%)?:(?P<end>\d+%)?\]$")


@dataclasses.dataclass(frozen=True)
class SequenceInfo:
    """A sequence's `seqinfo.ini`.

    Attributes:
        name: The sequence name.
        im_dir: The image folder, relative to the sequence folder ("img1").
        frame_rate: Frames per second.
        length: Number of frames; images are `im_dir/000001{ext}` .. `{length:06d}{ext}`.
        width, height: Image size in pixels.
        ext: Image file suffix (".jpg").
    """

    name: str
    im_dir: str
    frame_rate: float
    length: int
    width: int
    height: int
    ext: str


class GroundTruth(NamedTuple):
    """The rows of a gt.txt, in file order. N rows."""

    frames: np.ndarray  # int64 [N], 1-based.
    ids: np.ndarray  # int64 [N], the track id within the sequence.
    boxes: np.ndarray  # float32 [N, 4] xyxy, 0-based pixels.
    consider: np.ndarray  # bool [N], the "consider" flag (column 7).
    classes: np.ndarray  # int64 [N], MOTChallenge classes (1: pedestrian).
    visibility: np.ndarray  # float32 [N], 0..1.


class Detections(NamedTuple):
    """The rows of a det.txt, in file order. K rows."""

    frames: np.ndarray  # int64 [K], 1-based.
    boxes: np.ndarray  # float32 [K, 4] xyxy, 0-based pixels.
    scores: np.ndarray  # float32 [K].


class TrackResults(NamedTuple):
    """The rows of a MOTChallenge results file, in file order. K rows."""

    frames: np.ndarray  # int64 [K], 1-based.
    ids: np.ndarray  # int64 [K].
    boxes: np.ndarray  # float32 [K, 4] xyxy, 0-based pixels.
    scores: np.ndarray  # float32 [K].


def read_seqinfo(seq_dir: str) -> SequenceInfo:
    """Reads `seq_dir/seqinfo.ini` (section [Sequence], the keys of `SequenceInfo`)."""
    path = os.path.join(seq_dir, "seqinfo.ini")
    parser = configparser.ConfigParser()
    try:
        with open(path) as f:
            parser.read_file(f)
    except OSError as e:
        raise UserError(
            f"Cannot read {path} ({e}); a MOTChallenge sequence folder needs a seqinfo.ini "
            f"with a [Sequence] section holding {', '.join(_SEQINFO_KEYS)}."
        ) from e
    except configparser.Error as e:
        raise UserError(
            f"{path} is not an ini file ({' '.join(str(e).split())}); write it as "
            f"MOTChallenge does: a [Sequence] section holding {', '.join(_SEQINFO_KEYS)}."
        ) from e
    if not parser.has_section("Sequence"):
        raise UserError(
            f"{path} has no [Sequence] section; add one holding {', '.join(_SEQINFO_KEYS)}."
        )
    section = parser["Sequence"]  # Keys are case-insensitive.
    missing = [key for key in _SEQINFO_KEYS if key not in section]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)} in its [Sequence] section; add them "
            f"(it needs {', '.join(_SEQINFO_KEYS)})."
        )
    values = {}
    for key, kind in (("frameRate", float), ("seqLength", int), ("imWidth", int),
                      ("imHeight", int)):
        try:
            values[key] = kind(section[key])
        except ValueError:
            values[key] = -1
        if not values[key] > 0:
            raise UserError(
                f"{path}: {key} is {section[key]!r}; it must be a positive "
                f"{'number' if kind is float else 'whole number'}."
            )
    return SequenceInfo(
        name=section["name"], im_dir=section["imDir"], frame_rate=values["frameRate"],
        length=values["seqLength"], width=values["imWidth"], height=values["imHeight"],
        ext=section["imExt"],
    )


def read_ground_truth(path: str) -> GroundTruth:
    """Reads a MOTChallenge gt.txt (`frame,id,x,y,w,h,consider,class,visibility`).

    Raises:
        UserError: The file is missing or a line is malformed (naming its
            1-based line number).
    """
    rows = _read_rows(path, (9,), _GT_LAYOUT, whole=(0, 1))  # [N, 9]
    return GroundTruth(
        frames=rows[:, 0].astype(np.int64),
        ids=rows[:, 1].astype(np.int64),
        boxes=_xywh1_to_xyxy(rows[:, 2:6]),
        consider=rows[:, 6] != 0,
        classes=rows[:, 7].astype(np.int64),
        visibility=rows[:, 8].astype(np.float32),
    )


def read_detections(path: str) -> Detections:
    """Reads a MOTChallenge det.txt (`frame,-1,x,y,w,h,score`, 7 or 10 columns).

    Raises:
        UserError: The file is missing or a line is malformed.
    """
    rows = _read_rows(path, (7, 8, 9, 10), _DET_LAYOUT, whole=(0,))  # [K, 7]
    return Detections(
        frames=rows[:, 0].astype(np.int64),
        boxes=_xywh1_to_xyxy(rows[:, 2:6]),
        scores=rows[:, 6].astype(np.float32),
    )


def read_mot_results(path: str) -> TrackResults:
    """Reads tracker results (`frame,id,x,y,w,h,score,-1,-1,-1`), as `write_mot_results` writes.

    Raises:
        UserError: The file is missing or a line is malformed.
    """
    rows = _read_rows(path, (7, 8, 9, 10), _RESULT_LAYOUT, whole=(0, 1))  # [K, 7]
    return TrackResults(
        frames=rows[:, 0].astype(np.int64),
        ids=rows[:, 1].astype(np.int64),
        boxes=_xywh1_to_xyxy(rows[:, 2:6]),
        scores=rows[:, 6].astype(np.float32),
    )


def write_mot_results(
    path: str,
    frames: np.ndarray,
    ids: np.ndarray,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Writes tracks as MOTChallenge result lines, sorted by frame then id.

    Each line is `frame,id,x,y,w,h,score,-1,-1,-1` with (x, y) the 1-based
    top-left corner (box coordinates to 2 decimals, scores to 4), as
    TrackEval and the MOTChallenge server read them.

    Args:
        path: The file to write (its folder must exist).
        frames: int [K] 1-based frame numbers.
        ids: int [K] track ids.
        boxes_xyxy: float [K, 4] boxes in 0-based pixels.
        scores: float [K].
    """
    frames = np.asarray(frames).reshape(-1)  # [K]
    ids = np.asarray(ids).reshape(-1)  # [K]
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)  # [K, 4]
    scores = np.asarray(scores, np.float64).reshape(-1)  # [K]
    if not len(frames) == len(ids) == len(boxes) == len(scores):
        raise ValueError(
            f"frames, ids, boxes_xyxy and scores must have one row per box, got "
            f"{len(frames)}, {len(ids)}, {len(boxes)} and {len(scores)}."
        )
    order = np.lexsort((ids, frames))  # [K] by frame, then id.
    x, y = boxes[:, 0] + 1, boxes[:, 1] + 1  # [K] 1-based corner.
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # [K]
    lines = [
        f"{frames[k]:d},{ids[k]:d},{x[k]:.2f},{y[k]:.2f},{w[k]:.2f},{h[k]:.2f},"
        f"{scores[k]:.4f},-1,-1,-1\n"
        for k in order.tolist()
    ]
    try:
        with open(path, "w") as f:
            f.writelines(lines)
    except OSError as e:
        raise UserError(
            f"Cannot write tracking results {path!r} ({e}); check that its folder exists "
            "and is writable."
        ) from e


def parse_split(split: str) -> tuple[str, tuple[int, int]]:
    """Splits a "mot" split into its path and per-sequence frame range in percent.

    "train" -> ("train", (0, 100)); "train[:50%]" -> ("train", (0, 50));
    "train[50%:]" -> ("train", (50, 100)); "train[10%:60%]" -> ("train", (10, 60)).
    `frame_range` says which frames a range holds.

    Raises:
        UserError: The range is not `[P%:Q%]` with 0 <= P < Q <= 100.
    """
    match = _MOT_SPLIT.match(split)
    if match is None:
        if "[" in split and split.rstrip().endswith("]"):
            raise UserError(
                f"Cannot read the frame range of split {split!r}; write it as PATH[P%:Q%], "
                "e.g. 'train[:50%]' or 'train[50%:]' (either bound may be left out)."
            )
        return split, (0, 100)
    start = int(match["start"][:-1]) if match["start"] else 0
    end = int(match["end"][:-1]) if match["end"] else 100
    if not 0 <= start < end <= 100:
        raise UserError(
            f"Split {split!r} has the frame range {start}%..{end}%; it needs "
            "0 <= start < end <= 100, e.g. 'train[:50%]' or 'train[50%:]'."
        )
    return match["path"], (start, end)


def frame_range(length: int, percent: tuple[int, int]) -> tuple[int, int]:
    """The 1-based (first, last) frames, inclusive, of a sequence's percent range.

    The boundary at P% (0 < P < 100) follows frame `length * P // 100 + 1`, as
    in ByteTrack's MOT17 half split (`tools/convert_mot17_to_coco.py`): of a
    600-frame sequence, [:50%] is frames 1..301 and [50%:] frames 302..600.
    """

    def boundary(p: int) -> int:
        return 0 if p <= 0 else length if p >= 100 else min(length, length * p // 100 + 1)

    return boundary(percent[0]) + 1, boundary(percent[1])


@dataclasses.dataclass(frozen=True)
class _Sequence:
    """One sequence folder of a MOT split."""

    name: str
    path: str
    info: SequenceInfo


def find_sequences(root: str, detector: str = "FRCNN") -> list[_Sequence]:
    """The sequence folders under `root` (those with a seqinfo.ini), sorted by name.

    Folders that differ only by a MOT17 detector suffix (-DPM, -FRCNN, -SDP)
    are kept once: the `detector` copy if there is one, else the first name.
    """
    if not os.path.isdir(root):
        raise UserError(
            f"MOT folder {root!r} does not exist or is not a folder; point the split at a "
            "folder of MOTChallenge sequences (SEQ/seqinfo.ini, SEQ/img1/, SEQ/gt/gt.txt)."
        )
    names = sorted(
        entry.name for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
        and os.path.isfile(os.path.join(entry.path, "seqinfo.ini"))
    )  # fmt: skip
    if not names:
        raise UserError(
            f"MOT folder {root!r} holds no sequence folder with a seqinfo.ini; point the "
            "split at a folder of MOTChallenge sequences such as MOT17/train."
        )
    suffix = re.compile(r"^(.*)-(" + "|".join(DETECTORS) + r")$")
    copies: dict[str, list[str]] = {}
    for name in names:
        match = suffix.match(name)
        copies.setdefault(match[1] if match else name, []).append(name)
    kept = []
    for group in copies.values():
        preferred = [n for n in group if n.endswith(f"-{detector}")]
        kept.append((preferred or group)[0])
    if len(kept) < len(names):
        logging.info(
            "MOT folder %s holds %d sequences as %d folders (MOT17 gives each one per "
            "public detector, same images and ground truth); reading one copy of each, "
            "-%s where there is one.", root, len(kept), len(names), detector,
        )
    return [
        _Sequence(name, os.path.join(root, name), read_seqinfo(os.path.join(root, name)))
        for name in sorted(kept)
    ]


class MOTSource:
    """The frames of a MOTChallenge split as `moving_digits`-style records.

    Records are frames, sequence by sequence (sorted by folder name) and
    frame by frame, restricted to each sequence's `frame_range`. Record i is::

        {
            "image": np.ndarray uint8 [H, W, 3],  # RGB, read when the record is.
            "image/id": np.int64,  # i, the frame's index in the source.
            "sequence": np.int64,  # The sequence's index in `.sequences`.
            "frame": np.int64,  # 1-based frame number within its sequence.
            "objects": {  # Arrays of N rows:
                "bbox": float32 [N, 4],  # (ymin, xmin, ymax, xmax) / (H, W, H, W), clipped.
                "label": int64 [N],  # 0, "pedestrian".
                "track_id": int64 [N],  # The gt id.
                "identity": int64 [N],  # Split-wide identity; -1 for ignore regions.
                "digit": int64 [N],  # -1 (the field is moving_digits').
                "visibility": float32 [N],  # gt visibility; 0 for ignore regions.
                "is_crowd": bool [N],  # True: an ignore region (a distractor class).
            },
        }

    Objects are the ground-truth pedestrians (class 1, consider 1) and the
    ignore regions (see the module docstring), ordered by gt id. Identities
    number the (sequence, gt id) pairs of the pedestrians in the selected
    frames, in sequence order then id order: 0..num_identities-1. A sequence
    without gt/gt.txt (a test split) has no objects.

    Attributes:
        root: The split folder.
        sequences: Sequence folder names, by index.
        infos: Each sequence's `SequenceInfo`.
        first_frames, last_frames: int64 [S], each sequence's 1-based frame
            range (inclusive).
        num_identities: Number of identities.
    """

    def __init__(
        self, root: str, frames: tuple[int, int] = (0, 100), detector: str = "FRCNN"
    ):
        """Lists the sequences and reads their ground truth; no image is read.

        Args:
            root: The split folder (holding SEQ/seqinfo.ini folders).
            frames: The per-sequence frame range in percent (see `frame_range`).
            detector: Which copy of a MOT17 sequence to read (see `find_sequences`).
        """
        self.root = root
        found = find_sequences(root, detector)
        self.sequences = tuple(s.name for s in found)
        self.infos = tuple(s.info for s in found)
        self._paths = tuple(s.path for s in found)
        ranges = np.array([frame_range(s.info.length, frames) for s in found], np.int64)
        self.first_frames, self.last_frames = ranges[:, 0], ranges[:, 1]  # [S] each
        counts = np.maximum(self.last_frames - self.first_frames + 1, 0)  # [S]
        self._starts = np.concatenate([[0], np.cumsum(counts)])  # [S + 1]
        self._objects = []  # Per sequence: (frames [R] sorted, fields {name: [R, ...]}).
        without_gt, next_identity = [], 0
        for k, sequence in enumerate(found):
            gt_path = os.path.join(sequence.path, "gt", "gt.txt")
            if not os.path.exists(gt_path):
                without_gt.append(sequence.name)
                gt = _empty_ground_truth()
            else:
                gt = read_ground_truth(gt_path)
            objects, next_identity = _objects(
                gt, sequence, (self.first_frames[k], self.last_frames[k]), next_identity
            )
            self._objects.append(objects)
        if without_gt:
            logging.info(
                "MOT folder %s: %d of %d sequences have no gt/gt.txt, so no objects (%s).",
                root, len(without_gt), len(found), ", ".join(without_gt),
            )
        self.num_identities = next_identity

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Reads record `index`; UserError naming the image file if it is missing or bad."""
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"Index {i} is out of range for a source of {len(self)} frames.")
        i %= len(self)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        frame = int(self.first_frames[k] + i - self._starts[k])
        info = self.infos[k]
        image = load_image(
            os.path.join(self._paths[k], info.im_dir, f"{frame:06d}{info.ext}"), 3
        )  # [H, W, 3]
        rows, fields = self._objects[k]
        lo, hi = np.searchsorted(rows, [frame, frame + 1])
        return {
            "image": image,
            "image/id": np.int64(i),
            "sequence": np.int64(k),
            "frame": np.int64(frame),
            "objects": {name: value[lo:hi] for name, value in fields.items()},
        }

    def __repr__(self) -> str:
        return (
            f"MOTSource({self.root!r}: {len(self.sequences)} sequences, {len(self)} frames, "
            f"{self.num_identities} identities)"
        )


def _empty_ground_truth() -> GroundTruth:
    """A `GroundTruth` without rows."""
    return GroundTruth(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
        np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.float32),
    )


def ground_truth_roles(gt: GroundTruth, sequence_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Which gt rows are targets and which ignore regions (TrackEval's MOTChallenge rules).

    Returns:
        (target bool [N]: class 1 with consider flag 1; ignore bool [N]: a
        distractor class, MOT20's list for sequences named MOT20-*). Rows that
        are neither are not scored at all.
    """
    distractors = (
        MOT20_DISTRACTOR_CLASSES if sequence_name.startswith("MOT20") else DISTRACTOR_CLASSES
    )
    return gt.consider & (gt.classes == PEDESTRIAN), np.isin(gt.classes, distractors)


def _objects(
    gt: GroundTruth, sequence: _Sequence, frames: tuple[int, int], first_identity: int
) -> tuple[tuple[np.ndarray, dict[str, np.ndarray]], int]:
    """A sequence's record objects, sorted by (frame, id), and the next free identity."""
    target, ignore = ground_truth_roles(gt, sequence.name)  # [N] each
    keep = (target | ignore) & (gt.frames >= frames[0]) & (gt.frames <= frames[1])
    order = np.flatnonzero(keep)[np.lexsort((gt.ids[keep], gt.frames[keep]))]  # [R]
    target = target[order]  # [R]
    ids = gt.ids[order]  # [R]
    # Identities: the sequence's target ids, ascending, numbered on from first_identity.
    unique_ids, identity = np.unique(ids[target], return_inverse=True)
    identities = np.full(len(order), -1, np.int64)  # [R]
    identities[target] = first_identity + identity.reshape(-1)
    size = np.array([sequence.info.width, sequence.info.height] * 2, np.float32)  # [4]
    x0, y0, x1, y1 = np.clip(gt.boxes[order] / size, 0.0, 1.0).T  # [R] each
    fields = {
        "bbox": np.stack([y0, x0, y1, x1], axis=1).astype(np.float32).reshape(-1, 4),
        "label": np.zeros(len(order), np.int64),
        "track_id": ids,
        "identity": identities,
        "digit": np.full(len(order), -1, np.int64),
        "visibility": np.where(target, gt.visibility[order], 0.0).astype(np.float32),
        "is_crowd": ~target,
    }
    return (gt.frames[order], fields), first_identity + len(unique_ids)


def public_detections(
    root: str, split: str, detector: str = "FRCNN"
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The public detections (det/det.txt) of a "mot" split, by sequence index.

    Args:
        root: The data dir the split's path is relative to (config.data.data_dir).
        split: As for the "mot" dataset, e.g. "train[50%:]"; only detections in
            its frame range are returned.
        detector: Which copy of a MOT17 sequence to read (its det.txt differs).

    Returns:
        {k: (frames int64 [K], boxes float32 [K, 4] xyxy 0-based pixels, scores
        float32 [K])} for each sequence k of `MOTSource` on the same split,
        rows sorted by frame (stable).
    """
    path, percent = parse_split(split)
    result = {}
    for k, sequence in enumerate(find_sequences(os.path.join(root, path), detector)):
        first, last = frame_range(sequence.info.length, percent)
        dets = read_detections(os.path.join(sequence.path, "det", "det.txt"))
        keep = np.flatnonzero((dets.frames >= first) & (dets.frames <= last))
        keep = keep[np.argsort(dets.frames[keep], kind="stable")]
        result[k] = (dets.frames[keep], dets.boxes[keep], dets.scores[keep])
    return result


def read_frames(path: str) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """Reads the frames to track from a folder of images or a video file, in order.

    A folder's images (`FRAME_SUFFIXES`, any case) are numbered by the number
    that ends their names (000001.jpg, frame_12.png), the smallest being
    frame 1, or, when some name has none or two share one, 1..N in name
    order. A number missing from that numbering, or an image that cannot be
    read, gives `None` for that frame with a warning, so a tracker can keep
    predicting through it. A video (or animated GIF) is decoded with
    imageio (ffmpeg, or PIL for GIFs); frames are numbered from 1.

    Args:
        path: A folder of images or a video file.

    Yields:
        (frame number, uint8 [H, W, 3] RGB image or None, name): the name is
        the image file's (for a missing frame, the name it would have had) or
        "VIDEO#000001" for a video's frames.

    Raises:
        UserError: The path does not exist, the folder has no images, or the
            video cannot be opened or decoded (naming it).
    """
    if os.path.isdir(path):
        return _folder_frames(path, _numbered_frames(path))
    if os.path.isfile(path):
        return _video_frames(path)
    raise UserError(
        f"Cannot track {path!r}: it is neither a folder of images nor a video file; "
        "check the path."
    )


def _numbered_frames(folder: str) -> list[tuple[int, str]]:
    """(frame number, file name) of a frame folder's images, by frame (see read_frames)."""
    try:
        with os.scandir(folder) as entries:
            names = [
                e.name for e in entries
                if e.name.lower().endswith(FRAME_SUFFIXES) and not e.name.startswith(".")
                and e.is_file()
            ]  # fmt: skip
    except OSError as e:
        raise UserError(
            f"Cannot list frame folder {folder!r} ({e}); check that it is readable."
        ) from e
    if not names:
        raise UserError(
            f"Frame folder {folder!r} holds no images; put the frames in it as "
            f"{'/'.join(FRAME_SUFFIXES)} files named in frame order (000001.jpg, ...)."
        )
    numbers = [re.search(r"(\d+)$", os.path.splitext(name)[0]) for name in names]
    if all(numbers) and len({int(m[1]) for m in numbers}) == len(names):
        values = [int(m[1]) for m in numbers]
        first = min(values)
        return sorted((v - first + 1, name) for v, name in zip(values, names, strict=True))
    return list(enumerate(sorted(names), start=1))


def _folder_frames(
    folder: str, numbered: list[tuple[int, str]]
) -> Iterator[tuple[int, np.ndarray | None, str]]:
    expected = 1
    for frame, name in numbered:
        if frame > expected:
            missing = range(expected, frame)
            logging.warning(
                "Frame folder %s has no image for frame%s %s (before %s); tracking "
                "predicts through %s.", folder, "s" if len(missing) > 1 else "",
                f"{missing[0]}..{missing[-1]}" if len(missing) > 1 else missing[0], name,
                "them" if len(missing) > 1 else "it",
            )
            for f in missing:
                yield f, None, _renumbered(name, frame, f)
        try:
            image = load_image(os.path.join(folder, name), 3)  # [H, W, 3]
        except UserError as e:
            logging.warning("Frame %d: %s Tracking predicts through it.", frame, e)
            image = None
        yield frame, image, name
        expected = frame + 1


def _renumbered(name: str, frame: int, new_frame: int) -> str:
    """`name` (the file of `frame`) with its trailing number changed to `new_frame`."""
    stem, ext = os.path.splitext(name)
    match = re.search(r"(\d+)$", stem)
    if match is None:
        return f"{new_frame:06d}{ext}"
    digits = match[1]
    value = int(digits) - frame + new_frame
    width = len(digits) if digits.startswith("0") else 0
    return f"{stem[: match.start()]}{value:0{width}d}{ext}"


def _video_frames(path: str) -> Iterator[tuple[int, np.ndarray, str]]:
    import imageio.v3 as iio  # Imported here: only tracking a video needs it.

    base = os.path.basename(path)

    def fail(problem: str, error: Exception) -> UserError:
        # imageio's ffmpeg errors end with ffmpeg's stderr: keep its last line only.
        message, _, stderr = str(error).partition("=== stderr ===")
        lines = [line for line in stderr.splitlines() if line.strip()]
        detail = " ".join((message.strip() + (f": {lines[-1].strip()}" if lines else "")).split())
        return UserError(
            f"Cannot read video {path!r}: {problem} ({type(error).__name__}: {detail}); "
            "check that it is a video file imageio/ffmpeg can read (mp4, avi, mkv, gif, ...) "
            "or pass a folder of frame images."
        )

    # Broad excepts: imageio's plugins (and ffmpeg) raise many exception types.
    try:
        frames = iter(iio.imiter(path))
    except Exception as e:
        raise fail("it cannot be opened", e) from e
    number = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except Exception as e:
            problem = f"frame {number + 1} cannot be decoded" if number else (
                "it cannot be opened, or its first frame decoded")
            raise fail(problem, e) from e
        number += 1
        yield number, _frame_rgb(frame, path, number), f"{base}#{number:06d}"
    if number == 0:
        raise UserError(
            f"Video {path!r} has no frames; check that it is a complete video file."
        )


def _frame_rgb(frame: np.ndarray, path: str, number: int) -> np.ndarray:
    """A decoded video frame as uint8 [H, W, 3] RGB (alpha dropped)."""
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[..., :3]  # [H, W, 3]
    try:
        return to_rgb(frame)
    except ValueError as e:
        raise UserError(
            f"Video {path!r}, frame {number}: {e} Convert the video to 8-bit RGB."
        ) from e


def _read_rows(
    path: str, columns: tuple[int, ...], layout: str, whole: tuple[int, ...]
) -> np.ndarray:
    """float64 [N, min(columns)]: a comma-separated MOTChallenge file's numbers.

    Blank lines are skipped. A line must have one of `columns` fields, all
    finite numbers, those in `whole` whole numbers and the first >= 1.
    """
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise UserError(
            f"Cannot read {path} ({e}); it must exist and hold lines of {layout}."
        ) from e
    width = min(columns)
    # Fast path (10x faster: MOT20's gt files hold up to ~750k rows); any
    # problem falls through to the line-by-line check that names the line.
    table = None
    if any(line.strip() for line in lines):  # (loadtxt warns on no data.)
        try:
            table = np.loadtxt(lines, delimiter=",", ndmin=2, comments=None, dtype=np.float64)
        except ValueError:
            pass
    if table is not None and table.shape[1] in columns:
        table = table[:, :width].reshape(-1, width)
        whole_values = table[:, list(whole)]
        if (np.isfinite(table).all() and (whole_values == np.round(whole_values)).all()
                and (table[:, 0] >= 1).all()):
            return table
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        problem = None
        if len(fields) not in columns:
            problem = f"it has {len(fields)} fields"
        else:
            try:
                values = [float(v) for v in fields[:width]]
            except ValueError:
                problem = "it holds something that is not a number"
            else:
                if not np.isfinite(values).all():
                    problem = "it holds a NaN or infinite number"
                elif any(values[c] != int(values[c]) for c in whole) or values[0] < 1:
                    problem = "its frame or id is not a whole number (or the frame is < 1)"
        if problem:
            shown = line.strip()
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise UserError(
                f"{path}, line {number}: {problem} ({shown!r}); each line must be "
                f"{layout}: fix or delete that line."
            )
        rows.append(values)
    return np.array(rows, np.float64).reshape(-1, width)


def _xywh1_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """float [N, 4] MOTChallenge (x, y, w, h), (x, y) 1-based -> float32 [N, 4] xyxy 0-based."""
    x0, y0 = xywh[:, 0] - 1, xywh[:, 1] - 1  # [N] each
    return np.stack([x0, y0, x0 + xywh[:, 2], y0 + xywh[:, 3]], axis=1).astype(np.float32)
