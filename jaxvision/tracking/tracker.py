"""A jitted tracking-by-detection tracker (SORT, ByteTrack, DeepSORT-style).

The tracker holds a fixed number of track slots (`TrackerConfig.max_tracks`,
`T`) in a `TrackState` of arrays, and `update` advances it by one frame of `D`
padded detections with static shapes and no Python control flow on the data,
so a whole sequence is one `lax.scan` (`track_sequence`) compiled once.

A slot is free (`alive` False), tentative (alive, not `confirmed`, id 0) or
confirmed (with an id; "tracked" when it was matched in the previous frame,
`misses == 0`, "lost" otherwise). Each frame, with ByteTrack's structure
(`yolox/tracker/byte_tracker.py`):

1. Predict: Kalman predict every alive track (`ops.kalman`); as in ByteTrack,
   a lost track's height velocity is zeroed first.
2. First pass: the high detections (`score >= high_score`) against all alive
   confirmed tracks, tracked and lost.
   - "iou", "byte": cost `1 - IoU(predicted box, detection)`; a pair is
     feasible when `IoU >= match_iou`.
   - "appearance": cost `w * cos + (1 - w) * (1 - IoU)`, `w` =
     `appearance_weight` and `cos` = 1 - cosine similarity of the track's and
     the detection's embeddings; a pair is feasible when `IoU >= match_iou`,
     OR when it passes the Kalman gate (squared Mahalanobis distance of the
     detection to the predicted track <= `kalman.CHI2_95_4DOF`) AND `cos <=
     max_appearance_distance`. The IoU may be 0: appearance and the gate
     alone re-find a track after an occlusion. Overlap is evidence enough on
     its own (the gate, with ByteTrack's small process noise, would reject a
     sharp turn such as a bounce); the cost's appearance term then picks
     between overlapping tracks.
3. Second pass ("byte" and "appearance"): the low detections
   (`low_score <= score < high_score`) against the tracked (`misses == 0`
   before this frame) confirmed tracks left unmatched; cost `1 - IoU`,
   feasible when `IoU >= second_match_iou`. "iou" ignores low detections.
4. Third pass: the tentative tracks against the high detections left; cost
   `1 - IoU`, feasible when `IoU >= tentative_match_iou` (0.3: ByteTrack's
   0.7 distance, without its score fusion).
5. Matched tracks: Kalman update with the detection, `hits += 1`,
   `misses = 0`, embedding `<- normalize(m * old + (1 - m) * new)`
   ("appearance" only, `m` = `embedding_momentum`); a tentative track with
   `hits >= min_hits` is confirmed and takes the next id. Unmatched tracks:
   `misses += 1`; a tentative one dies, a confirmed one dies when
   `misses > max_misses`.
6. Birth: each unmatched high detection with `score >= new_track_score` takes
   a free slot, in detection order, with `hits = 1`; when no slot is free it
   is dropped (no track, no error). It is confirmed at once on the sequence's
   first frame (`frame == 0`, as ByteTrack) or when `min_hits <= 1`.

Every pass is a `ops.assignment.linear_assignment`: the most feasible pairs,
then the least total cost. Ids are 1, 2, 3, ... in order of confirmation
(within a frame: matched tracks in slot order, then births in detection
order); tentative tracks have id 0. The output of a frame holds the confirmed
tracks matched (or born) in it, as ByteTrack outputs them, with the box of
the detection they matched (ByteTrack reports the updated Kalman state
instead, which lags behind sharp turns: with this filter's small process
noise, a 16 px box reversing at 4 px/frame drops below IoU 0.5 with itself).

Detections whose box is not finite or has no positive width and height are
treated as padding.

Departures from ByteTrack: no fusion of IoU with detection scores; matching
takes the most feasible pairs first (not lapjv's thresholded minimum cost);
tentative tracks are predicted like the others; no removal of duplicate
tracked/lost pairs; a fixed number of slots.
"""

import dataclasses
import functools

import chex
import flax
import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.ops import assignment, kalman
from jaxvision.ops import boxes as box_ops

ASSOCIATIONS = ("iou", "byte", "appearance")

# The box given to padding detections and free slots, so that every Kalman
# quantity stays finite (a positive height keeps covariances invertible).
_PLACEHOLDER_BOX = (0.0, 0.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """The tracker's hyperparameters; frozen and hashable (a static jit argument)."""

    # "iou" (SORT-like), "byte" (ByteTrack), "appearance" (motion + appearance,
    # DeepSORT/FairMOT-like).
    association: str = "appearance"
    # Track slots: the most objects tracked at once (a static array size).
    max_tracks: int = 32
    # Detections >= this take part in the first association and may start tracks.
    high_score: float = 0.5
    # "byte"/"appearance": detections in [low_score, high_score) get a second,
    # IoU-only pass against tracks left unmatched (ByteTrack's key idea).
    low_score: float = 0.1
    # An unmatched high detection >= this starts a tentative track
    # (ByteTrack: track_thresh + 0.1).
    new_track_score: float = 0.6
    # First pass ("iou"/"byte"; "appearance" without appearance): IoU >= this.
    match_iou: float = 0.2
    # Second pass (low detections): IoU >= this (ByteTrack: distance 0.5).
    second_match_iou: float = 0.5
    # Third pass (tentative tracks): IoU >= this (ByteTrack: distance 0.7).
    tentative_match_iou: float = 0.3
    # "appearance" first-pass cost = w * cosine distance + (1 - w) * (1 - IoU).
    appearance_weight: float = 0.5
    # "appearance": a pair needs cosine distance <= this (or enough IoU) and
    # to pass the Mahalanobis gate.
    max_appearance_distance: float = 0.4
    # A tentative track is confirmed after this many matched frames (tracks
    # born on the first frame are confirmed at once, as ByteTrack does).
    min_hits: int = 2
    # A confirmed track dies after this many frames without a match
    # (ByteTrack's track_buffer at 30 fps); a tentative one dies at once.
    max_misses: int = 30
    # Track embedding <- normalize(m * old + (1 - m) * new) on each match
    # (JDE/FairMOT).
    embedding_momentum: float = 0.9

    def __post_init__(self):
        if self.association not in ASSOCIATIONS:
            raise UserError(
                f"TrackerConfig.association={self.association!r} is not one of "
                f"{', '.join(ASSOCIATIONS)}; pick one of them."
            )
        if not (isinstance(self.max_tracks, int) and self.max_tracks >= 1):
            raise UserError(
                f"TrackerConfig.max_tracks={self.max_tracks!r} must be an int >= 1."
            )
        unit_fields = (
            "high_score",
            "low_score",
            "new_track_score",
            "match_iou",
            "second_match_iou",
            "tentative_match_iou",
            "appearance_weight",
            "embedding_momentum",
        )
        for name in unit_fields:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"TrackerConfig.{name}={value!r} must be in [0, 1].")
        if self.low_score > self.high_score:
            raise UserError(
                f"TrackerConfig.low_score={self.low_score!r} must be <= "
                f"high_score={self.high_score!r}."
            )
        if not 0 <= self.max_appearance_distance <= 2:
            raise UserError(
                "TrackerConfig.max_appearance_distance="
                f"{self.max_appearance_distance!r} must be in [0, 2], "
                "the range of a cosine distance."
            )
        if not (isinstance(self.min_hits, int) and self.min_hits >= 1):
            raise UserError(
                f"TrackerConfig.min_hits={self.min_hits!r} must be an int >= 1."
            )
        if not (isinstance(self.max_misses, int) and self.max_misses >= 0):
            raise UserError(
                f"TrackerConfig.max_misses={self.max_misses!r} must be an int >= 0."
            )


@flax.struct.dataclass
class TrackState:
    """The tracker's state: `T` track slots of fixed-size arrays.

    Free slots hold a placeholder Kalman state (finite, positive-definite),
    zero embedding, counters and id.
    """

    mean: jax.Array  # [T, 8] Kalman state (cx, cy, a, h, vcx, vcy, va, vh)
    covariance: jax.Array  # [T, 8, 8]
    embedding: jax.Array  # [T, E] L2-normalised ("appearance"; zeros otherwise)
    alive: jax.Array  # [T] bool, the slot holds a track
    confirmed: jax.Array  # [T] bool
    hits: jax.Array  # [T] int32, matched frames (birth included)
    misses: jax.Array  # [T] int32, frames since the last match
    ids: jax.Array  # [T] int32, 0 while tentative (or free)
    next_id: jax.Array  # [] int32, the id the next confirmed track gets
    frame: jax.Array  # [] int32, frames seen so far


def _placeholder(max_tracks: int) -> tuple[jax.Array, jax.Array]:
    """The Kalman state of free slots: `([T, 8], [T, 8, 8])`."""
    measurement = kalman.boxes_to_measurements(jnp.array(_PLACEHOLDER_BOX))  # [4]
    mean, covariance = kalman.initiate(measurement)  # [8], [8, 8]
    return (
        jnp.broadcast_to(mean, (max_tracks, 8)),
        jnp.broadcast_to(covariance, (max_tracks, 8, 8)),
    )


def init_state(config: TrackerConfig, embedding_dim: int) -> TrackState:
    """An empty tracker (all slots free) at frame 0.

    Args:
      config: the tracker config.
      embedding_dim: `E`, the size of the detections' embeddings; 0 is fine
        unless `config.association == "appearance"`.
    """
    if embedding_dim < (1 if config.association == "appearance" else 0):
        raise UserError(
            f"embedding_dim={embedding_dim} is too small for association="
            f"{config.association!r}; give the size of the detections' embeddings."
        )
    t = config.max_tracks
    mean, covariance = _placeholder(t)  # [T, 8], [T, 8, 8]
    zeros = jnp.zeros((t,), jnp.int32)  # [T]
    return TrackState(
        mean=mean,
        covariance=covariance,
        embedding=jnp.zeros((t, embedding_dim), jnp.float32),
        alive=jnp.zeros((t,), bool),
        confirmed=jnp.zeros((t,), bool),
        hits=zeros,
        misses=zeros,
        ids=zeros,
        next_id=jnp.int32(1),
        frame=jnp.int32(0),
    )


def _normalize(x: jax.Array) -> jax.Array:
    """L2-normalises the last axis; zero vectors stay zero."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.where(norm > 0, norm, 1)


def _select(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """`where(mask, a, b)` with `mask` `[T]` broadcast over trailing axes."""
    return jnp.where(mask.reshape(-1, *[1] * (a.ndim - 1)), a, b)


def _match(
    cost: jax.Array, feasible: jax.Array, rows: jax.Array, cols: jax.Array
) -> jax.Array:
    """One association pass -> `[T]` int32 detection per track, -1 if unmatched."""
    feasible = feasible & rows[:, None] & cols[None, :]  # [T, D]
    return assignment.linear_assignment(cost, feasible)[0]  # [T]


def _used(track_to_det: jax.Array, num_dets: int) -> jax.Array:
    """`[T]` detection per track (-1: none) -> `[D]` bool, matched detections."""
    index = jnp.where(track_to_det >= 0, track_to_det, num_dets)  # [T], D: dropped
    return jnp.zeros((num_dets,), bool).at[index].set(True, mode="drop")


@functools.partial(jax.jit, static_argnames="config")
def update(
    state: TrackState, detections: dict[str, jax.Array], config: TrackerConfig
) -> tuple[TrackState, dict[str, jax.Array]]:
    """Advances the tracker by one frame (see the module docstring for the rules).

    Args:
      state: the state after the previous frame (or `init_state`).
      detections: `boxes` `[D, 4]` xyxy, `scores` `[D]`, `valid` `[D]` bool
        (False for padding; D may be 0) and, for "appearance", `embeddings` `[D, E]`
        (L2-normalised; ignored by the other associations).
      config: the tracker config (static under jit).

    Returns:
      `(state, output)`: the new state, and this frame's `boxes` `[T, 4]`
      (xyxy of the updated Kalman state), `ids` `[T]` int32, `scores` `[T]`
      (the matched detection's) and `valid` `[T]` bool, True for confirmed
      tracks matched or born in this frame; other slots are zero.
    """
    t = config.max_tracks
    if detections["boxes"].shape[0] == 0:  # Static: one padding slot instead.
        detections = {
            k: jnp.zeros((1, *v.shape[1:]), v.dtype) for k, v in detections.items()
        }
    boxes = detections["boxes"].astype(jnp.float32)  # [D, 4]
    num_dets = boxes.shape[0]
    scores = detections["scores"].astype(jnp.float32)  # [D]
    chex.assert_shape(boxes, (num_dets, 4))
    chex.assert_shape([scores, detections["valid"]], (num_dets,))
    chex.assert_shape(state.mean, (t, 8))
    use_appearance = config.association == "appearance"
    if use_appearance:
        det_embeddings = detections["embeddings"].astype(jnp.float32)  # [D, E]
        chex.assert_shape(det_embeddings, (num_dets, state.embedding.shape[1]))

    wh = boxes[:, 2:] - boxes[:, :2]  # [D, 2]
    valid = (
        detections["valid"]
        & jnp.all(jnp.isfinite(boxes), axis=1)
        & jnp.all(wh > 0, axis=1)
        & jnp.isfinite(scores)
    )  # [D]
    boxes = jnp.where(valid[:, None], boxes, jnp.array(_PLACEHOLDER_BOX))  # [D, 4]
    if use_appearance:
        det_embeddings = jnp.where(valid[:, None], det_embeddings, 0)  # [D, E]
    measurements = kalman.boxes_to_measurements(boxes)  # [D, 4]
    high = valid & (scores >= config.high_score)  # [D]
    low = valid & (scores >= config.low_score) & ~high  # [D]

    # 1. Predict. ByteTrack zeroes a lost track's height velocity first.
    alive, confirmed = state.alive, state.confirmed  # [T], [T]
    was_tracked = alive & (state.misses == 0)  # [T]
    mean = state.mean.at[:, 7].set(jnp.where(was_tracked, state.mean[:, 7], 0))
    predicted_mean, predicted_cov = jax.vmap(kalman.predict)(mean, state.covariance)
    mean = _select(alive, predicted_mean, state.mean)  # [T, 8]
    covariance = _select(alive, predicted_cov, state.covariance)  # [T, 8, 8]
    iou = box_ops.pairwise_iou(kalman.states_to_boxes(mean), boxes)  # [T, D]

    # 2. First pass: high detections vs confirmed tracks (tracked and lost).
    if use_appearance:
        cosine = 1 - state.embedding @ det_embeddings.T  # [T, D]
        gate = (
            jax.vmap(kalman.gating_distance, in_axes=(0, 0, None))(
                mean, covariance, measurements
            )
            <= kalman.CHI2_95_4DOF
        )  # [T, D]
        w = config.appearance_weight
        cost = w * cosine + (1 - w) * (1 - iou)  # [T, D]
        feasible = (iou >= config.match_iou) | (
            gate & (cosine <= config.max_appearance_distance)
        )  # [T, D]
    else:
        cost, feasible = 1 - iou, iou >= config.match_iou  # [T, D]
    first = _match(cost, feasible, alive & confirmed, high)  # [T]

    # 3. Second pass: low detections vs tracked confirmed tracks left, IoU only.
    if config.association == "iou":
        second = jnp.full((t,), -1, jnp.int32)  # [T]
    else:
        rows = alive & confirmed & was_tracked & (first < 0)  # [T]
        second = _match(1 - iou, iou >= config.second_match_iou, rows, low)  # [T]

    # 4. Third pass: tentative tracks vs the high detections left.
    third = _match(
        1 - iou,
        iou >= config.tentative_match_iou,
        alive & ~confirmed,
        high & ~_used(first, num_dets),
    )  # [T]
    # The three passes have disjoint tracks and disjoint detections.
    det_index = jnp.maximum(jnp.maximum(first, second), third)  # [T], -1: unmatched
    matched = det_index >= 0  # [T]
    det_index = jnp.maximum(det_index, 0)  # [T], safe to gather with

    # 5. Matched tracks: Kalman update, counters, embedding, confirmation.
    updated_mean, updated_cov = jax.vmap(kalman.update)(
        mean, covariance, measurements[det_index]
    )  # [T, 8], [T, 8, 8]
    mean = _select(matched, updated_mean, mean)  # [T, 8]
    covariance = _select(matched, updated_cov, covariance)  # [T, 8, 8]
    hits = jnp.where(matched, state.hits + 1, state.hits)  # [T]
    misses = jnp.where(matched, 0, state.misses + alive)  # [T]
    track_scores = jnp.where(matched, scores[det_index], 0)  # [T]
    track_boxes = _select(matched, boxes[det_index], jnp.zeros((t, 4)))  # [T, 4]
    embedding = state.embedding  # [T, E]
    if use_appearance:
        m = config.embedding_momentum
        smoothed = _normalize(m * embedding + (1 - m) * det_embeddings[det_index])
        embedding = _select(matched, smoothed, embedding)  # [T, E]
    promoted = matched & ~confirmed & (hits >= config.min_hits)  # [T]
    ids = jnp.where(promoted, state.next_id + jnp.cumsum(promoted) - 1, state.ids)
    next_id = state.next_id + jnp.sum(promoted, dtype=jnp.int32)
    confirmed = confirmed | promoted  # [T]
    dies = ~matched & (~confirmed | (misses > config.max_misses))  # [T]
    alive = alive & ~dies  # [T]

    # 6. Birth: the k-th new detection takes the k-th free slot, if any.
    used = _used(first, num_dets) | _used(third, num_dets)  # [D]
    births = high & ~used & (scores >= config.new_track_score)  # [D]
    free = ~alive  # [T]
    takes = (
        free[:, None]
        & births[None, :]
        & ((jnp.cumsum(free) - 1)[:, None] == (jnp.cumsum(births) - 1)[None, :])
    )  # [T, D], at most one True per row and per column
    born = jnp.any(takes, axis=1)  # [T]
    born_index = jnp.argmax(takes, axis=1)  # [T]
    born_mean, born_cov = jax.vmap(kalman.initiate)(measurements[born_index])
    born_confirmed = born & ((state.frame == 0) | (config.min_hits <= 1))  # [T]
    mean = _select(born, born_mean, mean)  # [T, 8]
    covariance = _select(born, born_cov, covariance)  # [T, 8, 8]
    if use_appearance:
        embedding = _select(born, det_embeddings[born_index], embedding)  # [T, E]
    alive = alive | born
    confirmed = jnp.where(born, born_confirmed, confirmed)  # [T]
    hits = jnp.where(born, 1, hits)  # [T]
    misses = jnp.where(born, 0, misses)  # [T]
    track_scores = jnp.where(born, scores[born_index], track_scores)  # [T]
    track_boxes = _select(born, boxes[born_index], track_boxes)  # [T, 4]
    ids = jnp.where(
        born_confirmed,
        next_id + jnp.cumsum(born_confirmed) - 1,
        jnp.where(born, 0, ids),
    )  # [T]
    next_id = next_id + jnp.sum(born_confirmed, dtype=jnp.int32)

    # Free slots go back to the placeholder.
    placeholder_mean, placeholder_cov = _placeholder(t)
    new_state = TrackState(
        mean=_select(alive, mean, placeholder_mean),
        covariance=_select(alive, covariance, placeholder_cov),
        embedding=_select(alive, embedding, jnp.zeros_like(embedding)),
        alive=alive,
        confirmed=alive & confirmed,
        hits=jnp.where(alive, hits, 0),
        misses=jnp.where(alive, misses, 0),
        ids=jnp.where(alive, ids, 0).astype(jnp.int32),
        next_id=next_id,
        frame=state.frame + 1,
    )
    out_valid = alive & confirmed & (misses == 0)  # [T]
    output = {
        "boxes": _select(out_valid, track_boxes, jnp.zeros((t, 4))),  # [T, 4]
        "ids": jnp.where(out_valid, ids, 0).astype(jnp.int32),  # [T]
        "scores": jnp.where(out_valid, track_scores, 0),  # [T]
        "valid": out_valid,  # [T]
    }
    return new_state, output


@functools.partial(jax.jit, static_argnames="config")
def track_sequence(
    detections: dict[str, jax.Array], config: TrackerConfig
) -> dict[str, jax.Array]:
    """Tracks a whole sequence: `init_state`, then `update` over frames in a `lax.scan`.

    Args:
      detections: the `update` inputs with a leading frame axis: `boxes`
        `[F, D, 4]`, `scores` `[F, D]`, `valid` `[F, D]` and ("appearance")
        `embeddings` `[F, D, E]`.
      config: the tracker config (static: one compilation per config and shapes).

    Returns:
      The `update` outputs stacked over frames: `boxes` `[F, T, 4]`, `ids`
      `[F, T]`, `scores` `[F, T]`, `valid` `[F, T]`.
    """
    embeddings = detections.get("embeddings")
    embedding_dim = 0 if embeddings is None else embeddings.shape[-1]
    state = init_state(config, embedding_dim)

    def step(state, frame_detections):
        return update(state, frame_detections, config)

    _, outputs = jax.lax.scan(step, state, detections)  # [F, T, ...]
    return outputs
