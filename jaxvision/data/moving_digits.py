"""The `moving_digits` tfds builder: videos of handwritten-digit cards for multi-object tracking.

An offline multi-object-tracking dataset (MOTChallenge-like ground truth) for
end-to-end tracking runs on any machine. A sequence is `NUM_FRAMES` = 40
black 128x128 grayscale frames in which 2 to 6 *cards* move. A card is one of
scikit-learn's real 8x8 handwritten digits resized (bilinear) to a square of
side 16..36 px and drawn opaque: its ink (0..255) alpha-blended over a dim
card background, a grey level in 40..70 drawn per card, so every pixel of a
card is >= 40 and the black frame shows only where no card is. Cards are
drawn in a random depth order fixed per sequence, the later one covering the
earlier, so overlapping cards really hide each other.

Motion (`plan_sequence`): every card moves at its own constant velocity,
speed uniform in 1..4 px/frame in a uniform direction. Most cards bounce off
the frame borders (their top-left corner follows a triangle wave, so they are
always wholly inside the frame and a bounce never moves them faster); a
*free* card (one in no event below) instead passes through, with probability
`PASSING_PROB` = 0.4 (in a sequence without events the first card always
bounces, so no frame is empty): half of those enter through a random border,
heading inwards within 60 degrees of its normal, at a frame in 2..21
(1-based; wholly outside before it), the others leave through one at a frame
in 21..39, and either may also cross the frame and leave (or have entered)
through another border. That is 22% of the 1,228 train cards and 27% of the
134 test cards; 136 / 16 of them are not yet in the first frame and 144 / 20
are gone by the last. Events, each drawn per sequence with probability 1/3:
  - *crossing*: two cards of the SAME digit class (a random class, two
    different digits of it) move on a collision course: their centres meet at
    a frame in 16..25, with directions at least 120 degrees apart (relative
    speed >= 1.7 px/frame), so one passes over the other around mid-sequence;
    their identities must be told apart by handwriting alone;
  - *occlusion*: a small card (side 16..22) and a larger one (30..36) drawn
    above it meet likewise, so the small card is wholly hidden for a few
    frames (visibility 0; median 4, 1..12 frames, but for one of the 121
    events, where a bounce sends both cards the same way: 23) and then
    reappears.
A sequence with both events has at least 4 cards. Cards also hide each other
by chance: 795 train and 74 test boxes have visibility 0. Positions are
rounded to whole pixels (`floor(x + 0.5)`), so a box moves at most 4 px per
frame along each axis, bounces included. Everything is drawn from a generator
seeded by (split, sequence index), so every build is identical and any
sequence can be made alone (`generate_sequence`).

Ground truth, per frame, for every card that has a pixel in the frame: its
card box (amodal: the whole square, hidden parts included) clipped to the
frame, a track id (1-based, unique in the sequence), its identity (the
digit's index in its `digits` split: every digit is one identity, never two
cards of one sequence), its digit class, and its visibility: the fraction of
its in-frame area not covered by cards above it (0: wholly hidden).

Train sequences use only the 1,437 digits of the `digits` train split and
test sequences only its 360 test digits, so test identities are never seen
in training. Splits: 300 train sequences (12,000 frames) and 30 test
sequences (1,200 frames); 110 train and 9 test sequences are crossing
sequences and 107 / 14 occlusion sequences, listed in `info.metadata` (see
`MovingDigits`). Building both splits takes ~17 s on a 2-core CPU (rendering
~2 s of it; the rest is tfds writing 13,200 records).

Source and citation: UCI Optical Recognition of Handwritten Digits ("optdigits"),
E. Alpaydin and C. Kaynak, 1998, doi:10.24432/C50P49 (BibTeX in `digits.CITATION`).
"""

import functools
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from jaxvision.data import digits

FRAME_SIZE = 128  # Frame height and width in pixels.
NUM_FRAMES = 40  # Frames per sequence.
# Nominal frames per second (MOTChallenge's seqinfo has one); motion is in px/frame.
FRAME_RATE = 10
MIN_OBJECTS, MAX_OBJECTS = 2, 6  # Cards per sequence, uniform.
# Card sides in pixels, uniform: 16 px (2x the 8 px digit) keeps the
# handwriting legible; 36 px leaves room for 6 cards to move in 128 px.
MIN_SIDE, MAX_SIDE = 16, 36
MIN_SPEED, MAX_SPEED = 1.0, 4.0  # px/frame, uniform: up to ~1/4 of a small card.
# Card background grey levels, uniform per card: dim, so the ink stands out,
# but never black, so a card's every pixel differs from the empty frame.
MIN_CARD_GREY, MAX_CARD_GREY = 40, 70
PASSING_PROB = 0.4  # A free card passes through instead of bouncing.
CROSSING_PROB = 1 / 3  # A sequence gets a same-class crossing ...
OCCLUSION_PROB = 1 / 3  # ... and (independently) a full occlusion.
# Occlusion event sides: the occluder is at least 8 px larger, so the small
# card fits inside it for (8..20 px) / (relative speed) frames.
OCCLUDED_SIDES = (MIN_SIDE, 22)
OCCLUDER_SIDES = (30, MAX_SIDE)
EVENT_FRAMES = (15, 24)  # 0-based frames at which an event's centres meet.
NUM_TRAIN_SEQUENCES = 300
NUM_TEST_SEQUENCES = 30
SPLITS = ("train", "test")  # Index i uses `digits.split_ids()[i]` as identities.
NUM_TRAIN_IDENTITIES = 1437  # len(digits.split_ids()[0]): train digits.
NUM_TEST_IDENTITIES = 360

_SEED = 0  # Sequence k of split s uses default_rng([_SEED, s, k]); never change it.


class DigitSequence(NamedTuple):
    """One rendered sequence of N cards over T frames (`generate_sequence`).

    Object i is card i; records list the cards present in a frame by track id.

    Attributes:
        frames: uint8 [T, 128, 128, 1].
        instances: int8 [T, 128, 128], the card that shows at each pixel
            (its index i), -1 where the frame is empty.
        boxes: float32 [T, N, 4] card boxes clipped to the frame, xyxy pixels
            (maxima exclusive; whole numbers), zeros where not present.
        present: bool [T, N], whether card i has a pixel in frame t.
        visibility: float32 [T, N], visible pixels / in-frame card pixels; 0
            where not present.
        track_ids: int64 [N], 1..N, a random permutation.
        identities: int64 [N], distinct, indices into the split's digits.
        digits: int64 [N], digit classes.
        sides: int64 [N], card sides in pixels.
        depth: int64 [N], the drawing order: card i is drawn depth[i]-th
            (higher is above).
        bounces: bool [N], whether card i bounces (else it passes through).
        crossing: () or (i, j), the same-class crossing pair.
        occlusion: () or (occluded, occluder).
    """

    frames: np.ndarray
    instances: np.ndarray
    boxes: np.ndarray
    present: np.ndarray
    visibility: np.ndarray
    track_ids: np.ndarray
    identities: np.ndarray
    digits: np.ndarray
    sides: np.ndarray
    depth: np.ndarray
    bounces: np.ndarray
    crossing: tuple[int, ...]
    occlusion: tuple[int, ...]


class MovingDigits(tfds.core.GeneratorBasedBuilder):
    """Videos of 2-6 moving, occluding handwritten-digit cards, one detection class.

    300 train sequences (12,000 frames) and 30 test sequences (1,200 frames)
    of 40 frames (see the module docstring for how they are made). Records
    are frames, sequence by sequence and frame by frame. Read back with
    `as_data_source` (no TensorFlow), a record with N cards in frame is::

        {
            "image": np.ndarray uint8 [128, 128, 1],
            "image/id": int,  # The frame's index in the split, 0..len-1.
            "sequence": int,  # The sequence's index in the split.
            "frame": int,  # 1..40 within its sequence (MOTChallenge numbering).
            "objects": {  # Lists of length N, by track id:
                "bbox": [np.ndarray float32 [4]] * N,  # (ymin, xmin, ymax, xmax) / 128,
                                                       # the card box clipped to the frame.
                "label": [np.int64] * N,  # Always 0, "digit": trackers are class-agnostic.
                "track_id": [np.int64] * N,  # 1-based, unique within the sequence.
                "identity": [np.int64] * N,  # The digit's index in its `digits` split.
                "digit": [np.int64] * N,  # Its class 0..9, for analysis.
                "visibility": [np.float32] * N,  # 0..1, 0 when wholly covered.
                "is_crowd": [np.bool_] * N,  # Always False.
            },
        }

    `info.metadata` holds `frames_per_sequence` (40), `frame_rate`,
    `frame_size` (128) and, per split, `num_sequences`, `num_identities`
    (1,437 / 360: the digits of that `digits` split; embedding heads are sized
    by the train one) and the sorted sequence indices of `crossing_sequences`
    and `occlusion_sequences`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: 300/30 sequences of 40 frames, 2-6 digit cards, "
        "same-class crossings and full occlusions."
    }
    # tfds derives `code_path` with `importlib_resources`, which it declares as
    # a dependency only for Python < 3.9; naming the file directly avoids it.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        # Tensor (not Image) features: Image encoding needs TensorFlow. Stored
        # as raw bytes: the default, a list of ints, is ~10x slower to build.
        image = tfds.features.Tensor(
            shape=(FRAME_SIZE, FRAME_SIZE, 1),
            dtype=np.uint8,
            encoding=tfds.features.Encoding.BYTES,
        )
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": image,
                    "image/id": tfds.features.Scalar(dtype=np.int64),
                    "sequence": tfds.features.Scalar(dtype=np.int64),
                    "frame": tfds.features.Scalar(dtype=np.int64),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=["digit"]),
                            "track_id": tfds.features.Scalar(dtype=np.int64),
                            "identity": tfds.features.Scalar(dtype=np.int64),
                            "digit": tfds.features.Scalar(dtype=np.int64),
                            "visibility": tfds.features.Scalar(dtype=np.float32),
                            "is_crowd": tfds.features.Scalar(dtype=np.bool_),
                        }
                    ),
                }
            ),
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=digits.CITATION,
            # Filled in `_split_generators`; saved as metadata.json.
            metadata=tfds.core.MetadataDict(),
            # Records are frames in sequence order: trackers read them in order.
            disable_shuffling=True,
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
        del dl_manager  # The digits ship with scikit-learn.
        self.info.metadata.update(split_metadata())
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        key = 0
        for index in range(num_sequences(split)):
            sequence = generate_sequence(split, index)
            order = np.argsort(sequence.track_ids)  # [N] objects by track id.
            for t in range(NUM_FRAMES):
                ids = order[sequence.present[t, order]]  # [n] present, by track id.
                x0, y0, x1, y1 = sequence.boxes[t, ids].T  # [n] each.
                bbox = np.stack([y0, x0, y1, x1], axis=1).reshape(-1, 4) / FRAME_SIZE
                yield key, {
                    "image": sequence.frames[t],
                    "image/id": key,
                    "sequence": index,
                    "frame": t + 1,
                    "objects": {
                        "bbox": bbox.astype(np.float32),  # [n, 4]
                        "label": np.zeros(len(ids), np.int64),
                        "track_id": sequence.track_ids[ids],
                        "identity": sequence.identities[ids],
                        "digit": sequence.digits[ids],
                        "visibility": sequence.visibility[t, ids],
                        "is_crowd": np.zeros(len(ids), np.bool_),
                    },
                }
                key += 1


def num_sequences(split: str) -> int:
    """`NUM_TRAIN_SEQUENCES` or `NUM_TEST_SEQUENCES`."""
    return (NUM_TRAIN_SEQUENCES, NUM_TEST_SEQUENCES)[SPLITS.index(split)]


def split_metadata() -> dict[str, Any]:
    """The builder's `info.metadata` (see `MovingDigits`); JSON-serialisable."""
    events = {split: _events(split) for split in SPLITS}
    return {
        "frames_per_sequence": NUM_FRAMES,
        "frame_rate": FRAME_RATE,
        "frame_size": FRAME_SIZE,
        "num_sequences": {split: num_sequences(split) for split in SPLITS},
        "num_identities": {split: len(ids) for split, ids in zip(SPLITS, digits.split_ids())},
        "crossing_sequences": {
            s: np.flatnonzero(e[:, 0]).tolist() for s, e in events.items()
        },
        "occlusion_sequences": {
            s: np.flatnonzero(e[:, 1]).tolist() for s, e in events.items()
        },
    }


def _events(split: str) -> np.ndarray:
    """bool [S, 2]: (crossing, occlusion) of each sequence of a split.

    They are the first two draws of each sequence's generator (`plan_sequence`).
    """
    split_index = SPLITS.index(split)
    rows = []
    for index in range(num_sequences(split)):
        u = np.random.default_rng([_SEED, split_index, index]).random(2)
        rows.append((u[0] < CROSSING_PROB, u[1] < OCCLUSION_PROB))
    return np.array(rows, bool).reshape(-1, 2)


@functools.cache
def _split_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [K, 8, 8] images, int64 [K] classes) of a `digits` split, by identity."""
    images, labels = digits.load_digits_uint8()  # [1797, 8, 8, 1], [1797]
    ids = digits.split_ids()[SPLITS.index(split)]
    return images[ids, ..., 0], labels[ids]


class _Plan(NamedTuple):
    """Everything drawn for a sequence of N cards (`plan_sequence`)."""

    identities: np.ndarray  # int64 [N]
    sides: np.ndarray  # int64 [N]
    greys: np.ndarray  # int64 [N]
    depth: np.ndarray  # int64 [N], a permutation: drawing rank.
    track_ids: np.ndarray  # int64 [N], a permutation of 1..N.
    start: np.ndarray  # float64 [N, 2] (x, y) top-left at frame index 0, unfolded.
    velocity: np.ndarray  # float64 [N, 2] px/frame.
    bounces: np.ndarray  # bool [N]
    crossing: tuple[int, ...]
    occlusion: tuple[int, ...]


def plan_sequence(split: str, index: int) -> _Plan:
    """Draws sequence `index` of a split: its cards, sizes, depths and motions.

    Object order: the crossing pair (if any), then the occlusion pair
    (occluded, occluder; if any), then free cards.
    """
    split_index = SPLITS.index(split)
    rng = np.random.default_rng([_SEED, split_index, index])
    crossing, occlusion = rng.random(2) < (CROSSING_PROB, OCCLUSION_PROB)  # == _events.
    num = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS, endpoint=True))
    num = max(num, 2 * (int(crossing) + int(occlusion)))
    _, classes = _split_digits(split)

    # Identities: distinct; the crossing pair shares a random class.
    identities = []
    if crossing:
        digit = rng.integers(10)
        identities += rng.choice(np.flatnonzero(classes == digit), 2, replace=False).tolist()
    rest = np.setdiff1d(np.arange(len(classes)), identities)
    identities += rng.choice(rest, num - len(identities), replace=False).tolist()
    identities = np.array(identities, np.int64)  # [N]

    sides = rng.integers(MIN_SIDE, MAX_SIDE, size=num, endpoint=True)  # [N]
    pairs = []
    if crossing:
        pairs.append((0, 1))
    if occlusion:
        a = 2 * int(crossing)
        sides[a] = rng.integers(*OCCLUDED_SIDES, endpoint=True)
        sides[a + 1] = rng.integers(*OCCLUDER_SIDES, endpoint=True)
        pairs.append((a, a + 1))
    greys = rng.integers(MIN_CARD_GREY, MAX_CARD_GREY, size=num, endpoint=True)  # [N]
    depth = rng.permutation(num)  # [N]
    if occlusion:  # The occluder is drawn above the card it hides.
        a, b = pairs[-1]
        if depth[a] > depth[b]:
            depth[[a, b]] = depth[[b, a]]
    track_ids = rng.permutation(num) + 1  # [N]

    speed = rng.uniform(MIN_SPEED, MAX_SPEED, size=num)  # [N]
    angle = rng.uniform(0, 2 * np.pi, size=num)  # [N]
    paired = 2 * len(pairs)
    for a, b in pairs:  # Directions >= 120 degrees apart: the cards pass each other.
        angle[b] = angle[a] + np.pi + rng.uniform(-np.pi / 3, np.pi / 3)
    velocity = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # [N, 2]
    start = rng.uniform(0, 1, size=(num, 2)) * (FRAME_SIZE - sides)[:, None]  # [N, 2]
    bounces = np.ones(num, bool)
    for a, b in pairs:
        # Centres meet at frame index t, both cards wholly inside the frame.
        t = rng.integers(*EVENT_FRAMES, endpoint=True)
        half = max(sides[a], sides[b]) / 2
        centre = rng.uniform(half, FRAME_SIZE - half, size=2)  # (x, y)
        for i in (a, b):
            start[i] = centre - sides[i] / 2 - velocity[i] * t
    # Free cards; with no event, the first always bounces, so no frame is empty.
    for i in range(max(paired, 1), num):
        if rng.random() >= PASSING_PROB:
            continue
        bounces[i] = False
        entering = rng.random() < 0.5
        # The border crossed: axis 0 (x) or 1 (y), at the low (0) or high (1) end.
        axis, end = rng.integers(2), rng.integers(2)
        # Inward direction within 60 degrees of the border's normal.
        normal = np.pi * end + (0.0 if axis == 0 else np.pi / 2)  # Outward normal ...
        inward = normal + np.pi + rng.uniform(-np.pi / 3, np.pi / 3)  # ... reversed.
        v = speed[i] * np.array([np.cos(inward), np.sin(inward)])
        # At frame index t the card has its first (entering) or last (leaving)
        # pixels in the frame; one frame earlier (later) it is wholly outside.
        if entering:
            t = rng.integers(1, NUM_FRAMES // 2, endpoint=True)
        else:
            t = rng.integers(NUM_FRAMES // 2, NUM_FRAMES - 2, endpoint=True)
        depth_in = abs(v[axis]) * (1.0 - rng.random())  # (0, |v|] px inside.
        corner = np.empty(2)
        corner[1 - axis] = rng.uniform(0, FRAME_SIZE - sides[i])
        corner[axis] = -sides[i] + depth_in if end == 0 else FRAME_SIZE - depth_in
        velocity[i] = v if entering else -v
        start[i] = corner - velocity[i] * t
    return _Plan(identities, sides, greys, depth, track_ids, start, velocity, bounces,
                 (0, 1) if crossing else (), pairs[-1] if occlusion else ())


def corners(plan: _Plan) -> np.ndarray:
    """int64 [T, N, 2]: each card's (x, y) top-left pixel in every frame."""
    t = np.arange(NUM_FRAMES, dtype=np.float64)  # [T]
    position = plan.start[None] + plan.velocity[None] * t[:, None, None]  # [T, N, 2]
    # Bouncing: a triangle wave over [0, FRAME_SIZE - side], 1-Lipschitz.
    span = (FRAME_SIZE - plan.sides).astype(np.float64)[None, :, None]  # [1, N, 1]
    folded = span - np.abs(np.mod(position, 2 * span) - span)  # [T, N, 2]
    position = np.where(plan.bounces[None, :, None], folded, position)
    return np.floor(position + 0.5).astype(np.int64)  # [T, N, 2]


def card_images(split: str, plan: _Plan) -> list[np.ndarray]:
    """Each card's pixels, uint8 [side, side]: ink blended over its grey."""
    images, _ = _split_digits(split)
    cards = []
    for identity, side, grey in zip(plan.identities, plan.sides, plan.greys, strict=True):
        glyph = Image.fromarray(images[identity]).resize((int(side), int(side)), Image.BILINEAR)
        alpha = np.asarray(glyph, np.float64) / 255.0  # [side, side]
        cards.append(np.rint(grey + alpha * (255 - grey)).astype(np.uint8))
    return cards


def generate_sequence(split: str, index: int, hidden: Iterable[int] = ()) -> DigitSequence:
    """Renders sequence `index` of a split, as the builder stores it.

    Args:
        split: "train" or "test".
        index: The sequence, 0..num_sequences(split) - 1; it depends on
            nothing else.
        hidden: Cards not to draw (for tests: hiding a wholly covered card
            changes no pixel). Their boxes and presence are kept, their
            visibility is 0.
    """
    plan = plan_sequence(split, index)
    num = len(plan.sides)
    corner = corners(plan)  # [T, N, 2]
    x0, y0 = corner[..., 0], corner[..., 1]  # [T, N] each.
    sides = plan.sides[None]  # [1, N]
    clipped = np.stack(
        [np.clip(x0, 0, FRAME_SIZE), np.clip(y0, 0, FRAME_SIZE),
         np.clip(x0 + sides, 0, FRAME_SIZE), np.clip(y0 + sides, 0, FRAME_SIZE)],
        axis=-1,
    )  # [T, N, 4] xyxy
    present = (clipped[..., 2] > clipped[..., 0]) & (clipped[..., 3] > clipped[..., 1])
    frames = np.zeros((NUM_FRAMES, FRAME_SIZE, FRAME_SIZE), np.uint8)
    instances = np.full((NUM_FRAMES, FRAME_SIZE, FRAME_SIZE), -1, np.int8)
    hidden = set(hidden)
    cards = card_images(split, plan)
    for i in np.argsort(plan.depth):  # Bottom card first.
        if i in hidden:
            continue
        for t in np.flatnonzero(present[:, i]):
            cx0, cy0, cx1, cy1 = clipped[t, i]
            window = np.s_[t, cy0:cy1, cx0:cx1]
            frames[window] = cards[i][cy0 - y0[t, i] : cy1 - y0[t, i],
                                      cx0 - x0[t, i] : cx1 - x0[t, i]]
            instances[window] = i
    # Visible pixels of card i in frame t, one bincount: bins t * (N + 1) + i + 1.
    bins = instances.reshape(NUM_FRAMES, -1) + 1 + (num + 1) * np.arange(NUM_FRAMES)[:, None]
    visible = np.bincount(bins.ravel(), minlength=NUM_FRAMES * (num + 1))
    visible = visible.reshape(NUM_FRAMES, num + 1)[:, 1:]  # [T, N]
    area = (clipped[..., 2] - clipped[..., 0]) * (clipped[..., 3] - clipped[..., 1])  # [T, N]
    visibility = np.where(present, visible / np.maximum(area, 1), 0.0)
    _, classes = _split_digits(split)
    return DigitSequence(
        frames=frames[..., None],
        instances=instances,
        boxes=np.where(present[..., None], clipped, 0).astype(np.float32),
        present=present,
        visibility=visibility.astype(np.float32),
        track_ids=plan.track_ids.astype(np.int64),
        identities=plan.identities,
        digits=classes[plan.identities].astype(np.int64),
        sides=plan.sides.astype(np.int64),
        depth=plan.depth.astype(np.int64),
        bounces=plan.bounces,
        crossing=plan.crossing,
        occlusion=tuple(int(i) for i in plan.occlusion),
    )
