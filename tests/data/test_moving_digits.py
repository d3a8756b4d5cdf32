"""The "moving_digits" builder: card videos with exact boxes, occlusion and same-class crossings."""

import numpy as np
import pytest
from PIL import Image

from jaxvision import data
from jaxvision.data import digits
from jaxvision.data import moving_digits as md
from jaxvision.errors import UserError

_SIZE = md.FRAME_SIZE
_T = md.NUM_FRAMES


def _records(split: str, data_dir: str, num_sequences: int | None = None) -> list[dict]:
    source = data.load_source("moving_digits", split, data_dir)
    num = len(source) if num_sequences is None else num_sequences * _T
    return source.__getitems__(list(range(num)))


def _objects(record: dict) -> dict[str, np.ndarray]:
    objects = {k: np.asarray(v) for k, v in record["objects"].items()}
    objects["bbox"] = objects["bbox"].reshape(-1, 4)
    return objects


def _pixel_boxes(record: dict) -> np.ndarray:
    """xyxy pixels [N, 4] of a record's boxes."""
    return (_objects(record)["bbox"] * _SIZE)[:, [1, 0, 3, 2]]


@pytest.fixture(scope="module")
def test_records(moving_digits_dir) -> list[dict]:
    return _records("test", moving_digits_dir)


@pytest.fixture(scope="module")
def train_records(moving_digits_dir) -> list[dict]:
    return _records("train", moving_digits_dir, 30)  # The first 30 sequences.


def test_split_sizes_and_info(moving_digits_dir):
    assert len(data.load_source("moving_digits", "train", moving_digits_dir)) == 12_000
    assert len(data.load_source("moving_digits", "test", moving_digits_dir)) == 1_200
    info = data.dataset_info("moving_digits", moving_digits_dir)
    assert (info.num_classes, info.class_names) == (1, ("digit",))
    assert info.is_detection and info.image_shape == (_SIZE, _SIZE, 1)
    assert not info.has_instance_masks
    assert info.num_examples == {"train": 12_000, "test": 1_200}
    metadata = md.MovingDigits(data_dir=moving_digits_dir).info.metadata
    assert metadata["num_identities"] == {"train": md.NUM_TRAIN_IDENTITIES, "test": 360}
    assert md.NUM_TRAIN_IDENTITIES == len(digits.split_ids()[0])
    assert metadata["frames_per_sequence"] == _T
    assert metadata["num_sequences"] == {"train": 300, "test": 30}
    sequences = data.sequence_metadata("moving_digits", "test", moving_digits_dir)
    assert len(sequences) == 30 and sequences[7].name == "test-007"
    assert (sequences[0].num_frames, sequences[0].first_frame) == (_T, 1)
    assert (sequences[0].height, sequences[0].width) == (_SIZE, _SIZE)
    # A slice of a split keeps the split's sequence indices: it describes the whole split.
    assert data.sequence_metadata("moving_digits", "test[:5]", moving_digits_dir) == sequences
    with pytest.raises(UserError, match="no video sequences in split 'validation'"):
        data.sequence_metadata("moving_digits", "validation", moving_digits_dir)


def test_records_are_frames_in_sequence_order(test_records, train_records):
    for records in (test_records, train_records):
        assert [r["image/id"] for r in records] == list(range(len(records)))
        num = len(records) // _T
        assert [r["sequence"] for r in records] == np.repeat(np.arange(num), _T).tolist()
        assert [r["frame"] for r in records] == list(range(1, _T + 1)) * (len(records) // _T)
    counts = []
    for record in test_records:
        assert record["image"].dtype == np.uint8 and record["image"].shape == (_SIZE, _SIZE, 1)
        objects = _objects(record)
        n = len(objects["label"])
        counts.append(n)
        assert objects["bbox"].dtype == np.float32
        assert (objects["label"] == 0).all() and not objects["is_crowd"].any()
        assert objects["visibility"].dtype == np.float32
        assert ((objects["visibility"] >= 0) & (objects["visibility"] <= 1)).all()
        assert (np.diff(objects["track_id"]) > 0).all()  # By track id, unique.
        assert len(set(objects["identity"].tolist())) == n
    assert min(counts) >= 1 and max(counts) <= md.MAX_OBJECTS


def test_generation_is_deterministic_and_matches_the_records(test_records, train_records):
    for split, index, records in (("test", 4, test_records), ("train", 11, train_records)):
        first, second = md.generate_sequence(split, index), md.generate_sequence(split, index)
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)
        order = np.argsort(first.track_ids)
        for t in range(_T):
            record = records[index * _T + t]
            np.testing.assert_array_equal(record["image"], first.frames[t])
            present = order[first.present[t, order]]
            objects = _objects(record)
            np.testing.assert_array_equal(_pixel_boxes(record), first.boxes[t, present])
            np.testing.assert_array_equal(objects["track_id"], first.track_ids[present])
            np.testing.assert_array_equal(objects["identity"], first.identities[present])
            np.testing.assert_array_equal(objects["visibility"], first.visibility[t, present])
    assert not np.array_equal(
        md.generate_sequence("train", 0).frames, md.generate_sequence("test", 0).frames
    )


def test_boxes_are_exactly_the_card_boxes(test_records):
    for record in test_records:
        boxes = _pixel_boxes(record)  # [N, 4]
        np.testing.assert_array_equal(boxes, np.round(boxes))
        assert (boxes >= 0).all() and (boxes <= _SIZE).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        # Cards are opaque and never black: the non-black pixels are exactly
        # the union of the boxes.
        covered = np.zeros((_SIZE, _SIZE), bool)
        for x0, y0, x1, y1 in boxes.astype(int):
            covered[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(record["image"][..., 0] > 0, covered)
        assert record["image"][covered].min() >= md.MIN_CARD_GREY
        # A box away from the borders is a whole card: a square of a card's side.
        inside = (boxes[:, :2] > 0).all(1) & (boxes[:, 2:] < _SIZE).all(1)
        sides = boxes[inside, 2:] - boxes[inside, :2]
        np.testing.assert_array_equal(sides[:, 0], sides[:, 1])
        assert ((sides >= md.MIN_SIDE) & (sides <= md.MAX_SIDE)).all()
    for index in range(6):
        sequence = md.generate_sequence("test", index)
        for t in range(_T):
            for i in np.flatnonzero(sequence.present[t]):
                x0, y0, x1, y1 = sequence.boxes[t, i].astype(int)
                rows, cols = np.nonzero(sequence.instances[t] == i)
                # A pixel of a visible card is inside its box, and visibility
                # counts exactly those pixels.
                if rows.size:
                    assert y0 <= rows.min() and rows.max() < y1
                    assert x0 <= cols.min() and cols.max() < x1
                area = (x1 - x0) * (y1 - y0)
                assert sequence.visibility[t, i] == np.float32(rows.size / area)


def test_fully_covered_cards_exist_and_are_invisible(test_records):
    hidden = [(r["sequence"], r["frame"], j) for r in test_records
              for j in np.flatnonzero(_objects(r)["visibility"] == 0)]
    assert len(hidden) >= 20
    sequences_with_hidden = sorted({s for s, _, _ in hidden})
    assert len(sequences_with_hidden) >= 5
    for index in sequences_with_hidden[:5]:
        sequence = md.generate_sequence("test", index)
        for t, i in zip(*np.nonzero(sequence.present & (sequence.visibility == 0)), strict=True):
            # Its box shows other cards only: drawing it or not changes no pixel.
            x0, y0, x1, y1 = sequence.boxes[t, i].astype(int)
            window = sequence.instances[t, y0:y1, x0:x1]
            assert (window >= 0).all() and (window != i).all()
            without = md.generate_sequence("test", index, hidden=[i])
            np.testing.assert_array_equal(without.frames[t], sequence.frames[t])
    # The occlusion events hide their small card for a few frames, then it reappears.
    metadata = md.split_metadata()
    for index in metadata["occlusion_sequences"]["test"]:
        sequence = md.generate_sequence("test", index)
        small, large = sequence.occlusion
        assert sequence.sides[large] >= sequence.sides[small] + 8
        assert sequence.depth[large] > sequence.depth[small]
        zero = np.flatnonzero(sequence.visibility[:, small] == 0)
        assert 1 <= len(zero) and zero.max() < _T - 1
        assert sequence.visibility[zero.max() + 1 :, small].max() > 0.5


def _tracks(records: list[dict]) -> dict[tuple[int, int], list[tuple[int, np.ndarray, int, int]]]:
    """(sequence, track id) -> [(frame, xyxy box, identity, digit)] in frame order."""
    tracks = {}
    for record in records:
        objects = _objects(record)
        for j, box in enumerate(_pixel_boxes(record)):
            key = (int(record["sequence"]), int(objects["track_id"][j]))
            tracks.setdefault(key, []).append((
                int(record["frame"]), box, int(objects["identity"][j]), int(objects["digit"][j])
            ))
    return tracks


def test_tracks_are_continuous_with_bounded_motion(test_records, train_records):
    starts, ends = [], []
    for records in (test_records, train_records):
        tracks = _tracks(records)
        for (sequence, _), track in tracks.items():
            frames = [f for f, _, _, _ in track]
            assert frames == list(range(frames[0], frames[-1] + 1))  # No gaps.
            starts.append(frames[0])
            ends.append(frames[-1])
            assert len({(i, d) for _, _, i, d in track}) == 1  # One identity per track.
            boxes = np.stack([b for _, b, _, _ in track])  # [F, 4]
            # Bounces included: each side moves at most MAX_SPEED px per frame.
            assert np.abs(np.diff(boxes, axis=0)).max(initial=0) <= md.MAX_SPEED
        # Identities are never repeated within a sequence.
        identities = {}
        for (sequence, _), track in tracks.items():
            identities.setdefault(sequence, []).append(track[0][2])
        for ids in identities.values():
            assert len(ids) == len(set(ids))
    # Cards pass through: some enter after the first frame, some leave before the last.
    assert sum(s > 1 for s in starts) >= 10 and sum(e < _T for e in ends) >= 10


def test_identities_are_digits_of_disjoint_splits(test_records, train_records):
    images, labels = digits.load_digits_uint8()
    train_ids, test_ids = digits.split_ids()
    assert set(train_ids.tolist()).isdisjoint(test_ids.tolist())
    for split, records, pool, other in (("test", test_records, test_ids, train_ids),
                                        ("train", train_records, train_ids, test_ids)):
        identities, checked = set(), 0
        for record in records:
            objects = _objects(record)
            identities |= set(objects["identity"].tolist())
            assert objects["identity"].max() < len(pool)
            np.testing.assert_array_equal(objects["digit"], labels[pool[objects["identity"]]])
            # A whole, fully visible card shows its identity's digit: its pixels
            # are an affine map of that digit resized, not of the other split's.
            for j, (x0, y0, x1, y1) in enumerate(_pixel_boxes(record).astype(int)):
                side = x1 - x0
                if objects["visibility"][j] < 1 or y1 - y0 != side or checked >= 200:
                    continue
                if not (x0 > 0 and y0 > 0 and x1 < _SIZE and y1 < _SIZE):
                    continue
                pixels = record["image"][y0:y1, x0:x1, 0].astype(float).ravel()

                def resized(sklearn_id, side=side):
                    glyph = Image.fromarray(images[sklearn_id, ..., 0])
                    return np.asarray(glyph.resize((side, side), Image.BILINEAR), float).ravel()

                identity = objects["identity"][j]
                assert np.corrcoef(pixels, resized(pool[identity]))[0, 1] > 0.99
                assert np.corrcoef(pixels, resized(other[identity % len(other)]))[0, 1] < 0.99
                checked += 1
        assert checked >= 100
        assert len(identities) > 100


def test_crossing_sequences_hold_a_same_class_pair_that_meets(test_records, moving_digits_dir):
    metadata = md.MovingDigits(data_dir=moving_digits_dir).info.metadata
    assert metadata == md.split_metadata()
    crossing = metadata["crossing_sequences"]
    assert 80 <= len(crossing["train"]) <= 120 and 5 <= len(crossing["test"]) <= 15
    tracks = _tracks(test_records)
    for index in range(30):
        sequence = md.generate_sequence("test", index)
        assert bool(sequence.crossing) == (index in crossing["test"])
        if index not in crossing["test"]:
            continue
        # From the records alone: two tracks of one digit class overlap mid-sequence.
        ours = {tid: track for (s, tid), track in tracks.items() if s == index}
        met = False
        for a, track_a in ours.items():
            for b, track_b in ours.items():
                if a >= b or track_a[0][3] != track_b[0][3]:
                    continue
                boxes_a = {f: box for f, box, _, _ in track_a}
                for f, box_b, _, _ in track_b:
                    box_a = boxes_a.get(f)
                    if box_a is None or not _T // 2 - 8 <= f <= _T // 2 + 8:
                        continue
                    inter = np.prod(np.clip(
                        np.minimum(box_a[2:], box_b[2:]) - np.maximum(box_a[:2], box_b[:2]), 0, None
                    ))
                    met |= inter > 0.5 * min(np.prod(box_a[2:] - box_a[:2]),
                                             np.prod(box_b[2:] - box_b[:2]))
        assert met, index
        i, j = sequence.crossing
        assert sequence.digits[i] == sequence.digits[j]
        assert sequence.identities[i] != sequence.identities[j]


def test_tracking_decode_keeps_track_fields_with_the_kept_boxes(test_records):
    record = test_records[3]
    objects = _objects(record)
    n = len(objects["label"])
    example = data.TrackingDecode(64, max_boxes=8, num_identities=360)(record)
    assert example["boxes"].shape == (8, 4) and example["image"].shape == (64, 64, 1)
    np.testing.assert_array_equal(example["track_ids"][:n], objects["track_id"])
    np.testing.assert_array_equal(example["identities"], np.pad(objects["identity"], (0, 8 - n),
                                                                constant_values=-1))
    np.testing.assert_array_equal(example["visibility"][:n], objects["visibility"])
    assert example["track_ids"].dtype == np.int32 and example["identities"].dtype == np.int32
    assert example["visibility"].dtype == np.float32 and not example["visibility"][n:].any()
    assert (example["sequence"], example["frame"]) == (0, 4)
    assert example["sequence"].dtype == np.int32
    most = int(objects["identity"].max())
    with pytest.raises(UserError, match=f"config.model.num_identities={most}; raise "
                                        f"config.model.num_identities to at least {most + 1}"):
        data.TrackingDecode(64, max_boxes=8, num_identities=most)(record)
