"""The tracker's behaviour on small synthetic sequences, in all three association modes.

Every sequence has the same shapes (F frames, D detection slots, E-dim
embeddings) and every config `max_tracks=T`, so each association compiles
`track_sequence` once for the whole file.
"""

import functools

import jax
import numpy as np
import pytest

from jaxvision import tracking
from jaxvision.errors import UserError

F, D, E, T = 24, 6, 8, 8
IOU = tracking.TrackerConfig(association="iou", max_tracks=T)
BYTE = tracking.TrackerConfig(association="byte", max_tracks=T)
APPEARANCE = tracking.TrackerConfig(association="appearance", max_tracks=T)
ALL = [IOU, BYTE, APPEARANCE]


def moving(start, velocity, size=(30.0, 60.0), frames=range(F), noise=0.0, seed=0):
    """`[F, 4]` xyxy boxes of an object moving at constant velocity; NaN when absent."""
    rng = np.random.default_rng(seed)
    boxes = np.full((F, 4), np.nan)
    for f in frames:
        x, y = np.asarray(start) + f * np.asarray(velocity)
        boxes[f] = [x, y, x + size[0], y + size[1]]
    return boxes + rng.normal(0, noise, boxes.shape)


def sequence(objects, scores=None):
    """Detections of `objects` (`[F, 4]` boxes, NaN when absent); object i in slot i.

    Args:
      objects: up to D `[F, 4]` arrays.
      scores: per object, a float or `[F]` scores (default 0.9).

    Object i has the embedding e_i (distinct unit vectors); padding is zeros.
    """
    boxes = np.zeros((F, D, 4), np.float32)
    score = np.zeros((F, D), np.float32)
    embeddings = np.zeros((F, D, E), np.float32)
    valid = np.zeros((F, D), bool)
    for i, obj in enumerate(objects):
        present = ~np.isnan(obj[:, 0])  # [F]
        valid[:, i] = present
        boxes[present, i] = obj[present]
        s = 0.9 if scores is None else scores[i]
        score[:, i] = np.where(present, s, 0)
        embeddings[present, i, i] = 1
    return {"boxes": boxes, "scores": score, "embeddings": embeddings, "valid": valid}


def iou(a, b):
    """IoU of `[4]` xyxy with `[N, 4]`."""
    wh = np.clip(np.minimum(a[2:], b[:, 2:]) - np.maximum(a[:2], b[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter)


def ids_on(out, obj):
    """`[F]` id of the output track closest to the object (IoU > 0.5), 0 if none."""
    result = np.zeros(F, int)
    for f in range(F):
        if np.isnan(obj[f, 0]):
            continue
        overlap = np.where(out["valid"][f], iou(obj[f], out["boxes"][f]), 0)  # [T]
        if overlap.max() > 0.5:
            result[f] = out["ids"][f][np.argmax(overlap)]
    return result


def frame(detections, f):
    """Frame `f` of a sequence: the `update` inputs."""
    return {key: value[f] for key, value in detections.items()}


def run(detections, config):
    out = jax.tree.map(np.asarray, tracking.track_sequence(detections, config))
    for value in out.values():
        assert np.all(np.isfinite(value))
    return out


@pytest.mark.parametrize("config", ALL, ids=lambda c: c.association)
def test_straight_lines_keep_ids(config):
    a = moving((50, 100), (3, 1), noise=0.5, seed=1)
    b = moving((400, 150), (-4, -1), size=(40, 80), noise=0.5, seed=2)
    out = run(sequence([a, b]), config)
    np.testing.assert_array_equal(ids_on(out, a), 1)  # Born on frame 0: confirmed.
    np.testing.assert_array_equal(ids_on(out, b), 2)
    assert out["valid"].sum(1).tolist() == [2] * F
    np.testing.assert_allclose(out["scores"][out["valid"]], 0.9)
    # The output is the filtered box, within a few pixels of the detection.
    slot = np.argmax(out["ids"] == 1, axis=1)
    np.testing.assert_allclose(out["boxes"][np.arange(F), slot], a, atol=2.0)


@pytest.mark.parametrize("config", ALL, ids=lambda c: c.association)
def test_occlusion_keeps_id(config):
    frames = [f for f in range(F) if not 8 <= f < 12]  # Missed for 4 frames.
    a = moving((50, 100), (3, 1), frames=frames)
    b = moving((400, 150), (-4, 0))
    out = run(sequence([a, b]), config)
    want = np.where((np.arange(F) >= 8) & (np.arange(F) < 12), 0, 1)
    np.testing.assert_array_equal(ids_on(out, a), want)
    np.testing.assert_array_equal(out["valid"].sum(1), 2 - (want == 0))
    np.testing.assert_array_equal(ids_on(out, b), 2)


def test_appearance_refinds_within_the_gate_only():
    # A tall box stops while occluded: its prediction overshoots by > its width
    # (IoU 0), well inside the grown Kalman gate.
    frames = [f for f in range(F) if not 10 <= f < 16]
    tall = moving((50, 100), (6, 0), size=(20.0, 200.0), frames=frames)
    tall[16:] = tall[10 - 1] + [6, 0, 6, 0]
    # A box that reappears 300 px away with the same embedding: outside the gate.
    jump = moving((300, 50), (3, 1), frames=[f for f in range(F) if not 10 <= f < 12])
    jump[12:] += [300, 0, 300, 0]
    detections = sequence([tall, jump])
    out = run(detections, APPEARANCE)
    np.testing.assert_array_equal(
        ids_on(out, tall), np.where(np.isnan(tall[:, 0]), 0, 1)
    )
    np.testing.assert_array_equal(ids_on(out, jump)[:10], 2)
    np.testing.assert_array_equal(ids_on(out, jump)[12:], [0] + [3] * (F - 13))
    out = run(detections, IOU)  # Without appearance, both get new ids.
    np.testing.assert_array_equal(ids_on(out, tall)[16:], [0] + [4] * (F - 17))
    np.testing.assert_array_equal(ids_on(out, jump)[12:], [0] + [3] * (F - 13))


def crossing():
    """Two boxes approach, overlap at frame 12 (2 px apart in y), and both turn back.

    After the turn, each track's constant-velocity prediction lands on the
    *other* object (2 px off in y) rather than on its own (4 px off in x):
    IoU alone swaps the ids.
    """
    a, b = np.full((F, 4), np.nan), np.full((F, 4), np.nan)
    for f in range(F):
        s = min(f, 24 - f)  # Advance until frame 12, then go back.
        a[f] = [76 + 2 * s, 50, 116 + 2 * s, 90]
        b[f] = [124 - 2 * s, 52, 164 - 2 * s, 92]
    return a, b


def test_crossing_swaps_ids_with_iou_but_not_with_appearance():
    a, b = crossing()
    detections = sequence([a, b])
    before, after = np.arange(F) <= 12, np.arange(F) > 12
    for config in (IOU, BYTE):
        out = run(detections, config)
        ids_a, ids_b = ids_on(out, a), ids_on(out, b)
        np.testing.assert_array_equal(ids_a[before], 1)
        np.testing.assert_array_equal(ids_a[after], 2)  # The ID switch.
        np.testing.assert_array_equal(ids_b[after], 1)
    out = run(detections, APPEARANCE)
    np.testing.assert_array_equal(ids_on(out, a), 1)
    np.testing.assert_array_equal(ids_on(out, b), 2)


def test_low_score_detections_continue_a_track_in_byte_not_in_iou():
    a = moving((50, 100), (3, 1))
    low = (np.arange(F) >= 8) & (np.arange(F) < 12)
    detections = sequence([a], scores=[np.where(low, 0.3, 0.9)])
    out = run(detections, BYTE)
    np.testing.assert_array_equal(ids_on(out, a), 1)
    np.testing.assert_allclose(out["scores"][low].max(1), 0.3)
    out = run(detections, IOU)
    np.testing.assert_array_equal(ids_on(out, a), np.where(low, 0, 1))


def test_tentative_track_dies_and_ids_follow_confirmation_order():
    a = moving((50, 100), (3, 1))  # Frame 0: confirmed at once, id 1.
    spurious = moving((300, 300), (0, 0), frames=[5])  # Tentative, never matched.
    b = moving((400, 50), (-3, 0), frames=range(10, F))  # Confirmed on its 2nd frame.
    c = moving((200, 250), (0, -2), frames=range(14, F))
    detections = sequence([a, spurious, b, c])
    state, outputs, alive = tracking.init_state(APPEARANCE, E), [], []
    for f in range(F):
        state, out = tracking.update(state, frame(detections, f), APPEARANCE)
        outputs.append(out)
        alive.append(int(state.alive.sum()))
    out = jax.tree.map(lambda *x: np.stack(x), *outputs)
    np.testing.assert_array_equal(alive[3:8], [1, 1, 2, 1, 1])  # Born, then dead.
    assert np.all(ids_on(out, spurious) == 0)
    np.testing.assert_array_equal(ids_on(out, a), 1)
    np.testing.assert_array_equal(ids_on(out, b)[10:], [0] + [2] * (F - 11))
    np.testing.assert_array_equal(ids_on(out, c)[14:], [0] + [3] * (F - 15))
    assert set(out["ids"][out["valid"]].tolist()) == {1, 2, 3}
    assert np.all(out["ids"][~out["valid"]] == 0)


def test_matched_embedding_is_smoothed():
    detections = sequence([moving((50, 100), (3, 1))])
    new = np.zeros(E, np.float32)
    new[:2] = 0.8, 0.6  # Cosine distance 0.2 to e_0, the embedding of frame 0.
    detections["embeddings"][1, 0] = new
    state = tracking.init_state(APPEARANCE, E)
    for f in range(2):
        state, out = tracking.update(state, frame(detections, f), APPEARANCE)
    assert out["valid"].sum() == 1
    m = APPEARANCE.embedding_momentum
    want = m * np.eye(E)[0] + (1 - m) * new
    np.testing.assert_allclose(
        state.embedding[out["valid"]][0], want / np.linalg.norm(want), rtol=1e-5
    )


def test_births_beyond_max_tracks_are_dropped():
    # Six objects fill six of the T = 8 slots; at frame 3 three of them vanish
    # (lost, they keep their slots) and three new ones appear in their detection
    # slots: the first two take the free slots, the third is dropped.
    old = [moving((60 * i, 20 * i), (1, 1), frames=range(3)) for i in range(3)]
    stay = [moving((60 * i, 20 * i), (1, 1)) for i in range(3, 6)]
    new = [moving((60 * i, 300), (1, 0), frames=range(3, F)) for i in range(3)]
    merged = [np.where(np.isnan(o), n, o) for o, n in zip(old, new)]
    out = run(sequence(merged + stay), BYTE)
    for i, obj in enumerate(stay):
        np.testing.assert_array_equal(ids_on(out, obj), 4 + i)
    np.testing.assert_array_equal(ids_on(out, new[0])[3:], [0] + [7] * (F - 4))
    np.testing.assert_array_equal(ids_on(out, new[1])[3:], [0] + [8] * (F - 4))
    np.testing.assert_array_equal(ids_on(out, new[2]), 0)
    np.testing.assert_array_equal(out["valid"].sum(1), [6] * 3 + [3] + [5] * (F - 4))


def test_empty_detections_give_nothing_and_no_nan():
    detections = sequence([])
    for key in ("boxes", "scores", "embeddings"):  # Garbage in the padding.
        detections[key][:] = np.nan
    for config in ALL:
        out = run(detections, config)  # Checks finiteness.
        assert not out["valid"].any()
    state = tracking.init_state(APPEARANCE, E)
    for f in range(3):
        state, _ = tracking.update(state, frame(detections, f), APPEARANCE)
    for leaf in jax.tree.leaves(state):
        assert np.all(np.isfinite(leaf))
    assert not state.alive.any() and int(state.next_id) == 1 and int(state.frame) == 3
    # No detection slots at all (D = 0) traces to the same output shapes.
    no_slots = jax.tree.map(lambda x: x[:, :0], detections)
    shapes = jax.eval_shape(
        functools.partial(tracking.track_sequence, config=BYTE), no_slots
    )
    assert {k: v.shape for k, v in shapes.items()} == {
        "boxes": (F, T, 4),
        "ids": (F, T),
        "scores": (F, T),
        "valid": (F, T),
    }


def busy_sequence(seed):
    """Four noisy objects with gaps, low scores, a crossing and a late start."""
    a, b = crossing()
    c = moving(
        (300, 300),
        (-2, -3),
        frames=[f for f in range(F) if f % 7 != 3],
        noise=1.0,
        seed=seed,
    )
    d = moving((500, 80), (-5, 2), frames=range(6, F), noise=1.0, seed=seed + 1)
    scores = [0.9, 0.8, np.where(np.arange(F) % 5 == 2, 0.35, 0.7), 0.95]
    return sequence([a, b, c, d], scores)


def test_track_sequence_equals_update_frame_by_frame():
    detections = busy_sequence(0)
    want = run(detections, APPEARANCE)
    state = tracking.init_state(APPEARANCE, E)
    for f in range(F):
        state, got = tracking.update(state, frame(detections, f), APPEARANCE)
        for key in ("ids", "valid"):
            np.testing.assert_array_equal(got[key], want[key][f])
        for key in ("boxes", "scores"):
            np.testing.assert_allclose(got[key], want[key][f], rtol=1e-5, atol=1e-4)
    assert int(state.frame) == F and int(state.next_id) == 5  # Four objects.


def test_one_compilation_per_config_and_shapes():
    run(busy_sequence(0), APPEARANCE)
    compiled = tracking.track_sequence._cache_size()
    # New values and an equal (not identical) config: no recompilation.
    run(
        busy_sequence(1), tracking.TrackerConfig(association="appearance", max_tracks=T)
    )
    assert tracking.track_sequence._cache_size() == compiled


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"association": "sort"}, "association"),
        ({"max_tracks": 0}, "max_tracks"),
        ({"high_score": 1.5}, "high_score"),
        ({"low_score": 0.6, "high_score": 0.5}, "low_score"),
        ({"match_iou": -0.1}, "match_iou"),
        ({"max_appearance_distance": 3.0}, "max_appearance_distance"),
        ({"min_hits": 0}, "min_hits"),
        ({"max_misses": -1}, "max_misses"),
        ({"embedding_momentum": 2.0}, "embedding_momentum"),
    ],
)
def test_config_validation(kwargs, field):
    with pytest.raises(UserError, match=field):
        tracking.TrackerConfig(**kwargs)


def test_appearance_needs_embeddings():
    with pytest.raises(UserError, match="embedding_dim"):
        tracking.init_state(APPEARANCE, 0)
    assert tracking.init_state(IOU, 0).embedding.shape == (T, 0)
