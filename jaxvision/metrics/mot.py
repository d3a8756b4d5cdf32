"""Multi-object-tracking metrics: CLEAR-MOT, identity (IDF1) and HOTA, in plain NumPy.

A sequence is a set of ground-truth boxes and predicted boxes, each with a
frame number and an identity (`SequenceData`). Boxes are xyxy; a box's area
is `(x2 - x1) * (y2 - y1)` (continuous coordinates, no +1 pixel), as in both
references. Rows within one frame are used in the order given, which is what
breaks ties between equally good assignments (the references read the rows
in file order).

- CLEAR-MOT (`clear_mot`) follows py-motmetrics' `MOTAccumulator` with
  distance `1 - IoU` and max distance `1 - iou_threshold`: in each frame a
  ground-truth box keeps the prediction it was last matched to (in any earlier
  frame) if they still overlap enough; the rest is assigned by min-cost
  Hungarian matching. A match to a prediction other than the one a
  ground-truth identity was last matched to is an ID switch. MOTA is
  `1 - (FN + FP + IDSW) / num_gt`; MOTP is the mean IoU of the matches
  (TrackEval's convention, higher is better; motmetrics' `motp` is 1 - ours).
- Identity metrics (`identity_metrics`, Ristani et al. 2016) match whole
  ground-truth trajectories to whole predicted trajectories one-to-one so
  that IDTP, the number of frames where matched trajectories overlap with
  IoU >= threshold, is largest (the same optimum as motmetrics' and
  TrackEval's min-cost formulation). IDF1 = 2 IDTP / (num_gt + num_pred).
- HOTA (`hota`, Luiten et al. 2021) follows TrackEval's
  `trackeval/metrics/hota.py`: for each alpha in 0.05, 0.10, ..., 0.95, the
  detection accuracy DetA and association accuracy AssA; HOTA = sqrt(DetA
  AssA). Reported values are means over the alphas; `combine_hota` merges
  sequences.
- `remove_ignored` is TrackEval's MOTChallenge preprocessing for ground truth
  the tracker is not scored on (distractors, mostly occluded people).
- `evaluate_sequences` combines sequences as motmetrics' "OVERALL" row and
  TrackEval's `combine_sequences` do: counts are summed, AssA and LocA are
  weighted by the true positives of each sequence.

Ratios never come out NaN. Where a denominator can be 0 they follow TrackEval:
it is replaced by max(1, denominator), so with no ground truth MOTA is -FP,
and precision, recall, IDF1, IDP, IDR, MOTP, DetA, AssA and HOTA are 0 where
nothing was matched; LocA is 1 where nothing was matched.
"""

import collections
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.optimize

from jaxvision.errors import UserError

# TrackEval's alphas, built the same way so that the thresholds are the same
# floats: [0.05, 0.1, ..., 0.95], 19 values. Read-only.
HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)  # [A]
HOTA_ALPHAS.setflags(write=False)

_EPS = np.finfo(np.float64).eps  # TrackEval's `np.finfo('float').eps` margins.


@dataclasses.dataclass
class SequenceData:
    """One sequence, all frames; rows can come in any order.

    Attributes:
      gt_frames: int `[G]` frame number of each ground-truth box.
      gt_ids: int `[G]` identity of each ground-truth box (one box per identity
        and frame).
      gt_boxes: float `[G, 4]` xyxy.
      pred_frames: int `[P]` frame number of each predicted box.
      pred_ids: int `[P]` track id of each predicted box (one box per id and
        frame).
      pred_boxes: float `[P, 4]` xyxy.
      gt_ignore: bool `[G]` or None; True marks a ground-truth box the tracker
        is not scored on (e.g. mostly occluded). See `remove_ignored`.
    """

    gt_frames: np.ndarray
    gt_ids: np.ndarray
    gt_boxes: np.ndarray
    pred_frames: np.ndarray
    pred_ids: np.ndarray
    pred_boxes: np.ndarray
    gt_ignore: np.ndarray | None = None


def _as_int(x, name: str) -> np.ndarray:
    """`x` as int64 `[N]`, or a UserError if it is not 1-D integral."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise UserError(f"SequenceData.{name} must be a 1-D array, got shape {x.shape}.")
    if x.dtype == bool or not (
        np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    ):
        raise UserError(f"SequenceData.{name} must hold integers, got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x) | (x != np.round(x))  # [N]
        if np.any(bad):
            raise UserError(
                f"SequenceData.{name} must hold whole numbers, got {x[bad][:5].tolist()} "
                f"at rows {np.flatnonzero(bad)[:5].tolist()}."
            )
    return x.astype(np.int64)


def _check_side(frames, ids, boxes, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One side (`gt` or `pred`) of a SequenceData, validated and converted."""
    frames = _as_int(frames, f"{side}_frames")  # [N]
    ids = _as_int(ids, f"{side}_ids")  # [N]
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0 and frames.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UserError(
            f"SequenceData.{side}_boxes must have shape [N, 4] (xyxy), got {boxes.shape}."
        )
    if not frames.shape[0] == ids.shape[0] == boxes.shape[0]:
        raise UserError(
            f"SequenceData.{side}_frames, {side}_ids and {side}_boxes must have one row per box, "
            f"got lengths {frames.shape[0]}, {ids.shape[0]} and {boxes.shape[0]}."
        )
    bad = ~np.all(np.isfinite(boxes), axis=1)  # [N]
    if np.any(bad):
        rows = np.flatnonzero(bad)
        raise UserError(
            f"SequenceData.{side}_boxes has NaN or inf coordinates in rows {rows[:5].tolist()} "
            f"(frames {frames[rows[:5]].tolist()}); boxes must be finite xyxy coordinates."
        )
    if frames.size:
        pairs, counts = np.unique(np.stack([frames, ids], axis=1), axis=0, return_counts=True)
        if np.any(counts > 1):
            frame, ident = pairs[np.argmax(counts > 1)].tolist()
            raise UserError(
                f"SequenceData.{side}_ids repeats id {ident} in frame {frame}; each identity "
                "may have at most one box per frame."
            )
    return frames, ids, boxes


def _checked(seq: SequenceData, allow_ignore: bool = False) -> SequenceData:
    """`seq` with validated int64/float64/bool arrays, or a UserError."""
    if not isinstance(seq, SequenceData):
        raise UserError(f"expected a SequenceData, got {type(seq).__name__}.")
    gt = _check_side(seq.gt_frames, seq.gt_ids, seq.gt_boxes, "gt")
    pred = _check_side(seq.pred_frames, seq.pred_ids, seq.pred_boxes, "pred")
    ignore = None
    if seq.gt_ignore is not None:
        ignore = np.asarray(seq.gt_ignore)
        if ignore.shape != gt[0].shape or not (
            ignore.dtype == bool or np.all((ignore == 0) | (ignore == 1))
        ):
            raise UserError(
                f"SequenceData.gt_ignore must be booleans of shape {gt[0].shape} (one per "
                f"ground-truth box), got dtype {ignore.dtype} and shape {ignore.shape}."
            )
        ignore = ignore.astype(bool)
        if not allow_ignore and np.any(ignore):
            raise UserError(
                "SequenceData.gt_ignore marks ground-truth boxes to ignore; call "
                "remove_ignored(seq) first (evaluate_sequences does this itself)."
            )
    return SequenceData(*gt, *pred, gt_ignore=ignore)


def _check_threshold(iou_threshold: float) -> float:
    iou_threshold = float(iou_threshold)
    if not 0.0 < iou_threshold <= 1.0:
        raise UserError(f"iou_threshold must be in (0, 1], got {iou_threshold}.")
    return iou_threshold


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes `[N, 4]` x `[M, 4]` -> `[N, M]`, no checks.

    The arithmetic is motmetrics' `boxiou` (and equals TrackEval's
    `_calculate_box_ious` for boxes with x2 >= x1, y2 >= y1).
    """
    a = a[:, None, :]  # [N, 1, 4]
    b = b[None, :, :]  # [1, M, 4]
    size = np.maximum(
        np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0
    )  # [N, M, 2]
    inter = size[..., 0] * size[..., 1]  # [N, M]
    a_size = np.maximum(a[..., 2:] - a[..., :2], 0)  # [N, 1, 2]
    b_size = np.maximum(b[..., 2:] - b[..., :2], 0)  # [1, M, 2]
    union = a_size[..., 0] * a_size[..., 1] + b_size[..., 0] * b_size[..., 1] - inter  # [N, M]
    nonzero = inter > 0  # [N, M]; union >= inter > 0 there.
    return np.where(nonzero, inter / np.where(nonzero, union, 1.0), 0.0)  # [N, M]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of two sets of boxes.

    Args:
      a: `[N, 4]` xyxy boxes.
      b: `[M, 4]` xyxy boxes.

    Returns:
      `[N, M]` float64 IoU in [0, 1]. Area is `(x2 - x1) * (y2 - y1)` with
      negative sizes clamped to 0; a pair with no intersection (including
      empty boxes) scores 0, never NaN.
    """
    boxes = []
    for name, x in (("a", a), ("b", b)):
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            x = x.reshape(0, 4)
        if x.ndim != 2 or x.shape[1] != 4:
            raise UserError(f"{name} must be a [N, 4] array of xyxy boxes, got shape {x.shape}.")
        if not np.all(np.isfinite(x)):
            raise UserError(f"{name} holds NaN or inf coordinates; boxes must be finite.")
        boxes.append(x)
    return _iou(*boxes)


def _frames(seq: SequenceData) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row indices `([g], [p])` of each frame present on either side, in frame order.

    Within a frame, rows keep their input order.
    """
    gt_order = np.argsort(seq.gt_frames, kind="stable")  # [G]
    pred_order = np.argsort(seq.pred_frames, kind="stable")  # [P]
    gt_sorted = seq.gt_frames[gt_order]  # [G]
    pred_sorted = seq.pred_frames[pred_order]  # [P]
    frames = np.union1d(gt_sorted, pred_sorted)  # [T]
    gt_lo = np.searchsorted(gt_sorted, frames, side="left")  # [T]
    gt_hi = np.searchsorted(gt_sorted, frames, side="right")  # [T]
    pred_lo = np.searchsorted(pred_sorted, frames, side="left")  # [T]
    pred_hi = np.searchsorted(pred_sorted, frames, side="right")  # [T]
    for t in range(frames.size):
        yield gt_order[gt_lo[t] : gt_hi[t]], pred_order[pred_lo[t] : pred_hi[t]]


def _matchable(iou: np.ndarray, iou_threshold: float) -> np.ndarray:
    """motmetrics' pairing rule: distance `1 - IoU` at most `1 - iou_threshold`."""
    return ~((1.0 - iou) > (1.0 - iou_threshold))


def remove_ignored(seq: SequenceData, iou_threshold: float = 0.5) -> SequenceData:
    """TrackEval's MOTChallenge preprocessing of ignored ground truth.

    Per frame, predictions are matched to *all* ground-truth boxes (Hungarian
    on IoU, pairs with IoU >= threshold only); predictions matched to an
    ignored box are removed. Then the ignored boxes themselves are removed.

    Args:
      seq: a sequence; `gt_ignore` None or all False returns it unchanged.
      iou_threshold: the IoU a prediction needs to be matched (TrackEval: 0.5).

    Returns:
      The sequence without those rows (others keep their order) and with
      `gt_ignore=None`.
    """
    seq = _checked(seq, allow_ignore=True)
    iou_threshold = _check_threshold(iou_threshold)
    if seq.gt_ignore is None or not np.any(seq.gt_ignore):
        return dataclasses.replace(seq, gt_ignore=None)
    drop_pred = np.zeros(seq.pred_ids.shape, dtype=bool)  # [P]
    for g, p in _frames(seq):
        if g.size == 0 or p.size == 0 or not np.any(seq.gt_ignore[g]):
            continue
        scores = _iou(seq.gt_boxes[g], seq.pred_boxes[p])  # [g, p]
        scores[scores < iou_threshold - _EPS] = 0
        rows, cols = scipy.optimize.linear_sum_assignment(-scores)  # [K], [K]
        matched = scores[rows, cols] > _EPS  # [K]
        rows, cols = rows[matched], cols[matched]
        drop_pred[p[cols[seq.gt_ignore[g][rows]]]] = True
    keep_gt = ~seq.gt_ignore  # [G]
    keep_pred = ~drop_pred  # [P]
    return SequenceData(
        gt_frames=seq.gt_frames[keep_gt],
        gt_ids=seq.gt_ids[keep_gt],
        gt_boxes=seq.gt_boxes[keep_gt],
        pred_frames=seq.pred_frames[keep_pred],
        pred_ids=seq.pred_ids[keep_pred],
        pred_boxes=seq.pred_boxes[keep_pred],
    )


def _motmetrics_assignment(costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-cost assignment with NaN = no edge, as motmetrics' scipy solver.

    motmetrics replaces missing edges by a cost too large to be worth taking
    (`lap.add_expensive_edges`), solves the full rectangle with scipy, then
    drops the missing edges; doing the same breaks ties the same way.
    """
    valid = np.isfinite(costs)  # [N, M]
    if not np.any(valid):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    c = np.abs(costs[valid]).max() + 1
    large = 2 * min(costs.shape) * c + 1
    rows, cols = scipy.optimize.linear_sum_assignment(np.where(valid, costs, large))
    keep = valid[rows, cols]  # [K]
    return rows[keep], cols[keep]


def clear_mot(seq: SequenceData, iou_threshold: float = 0.5) -> dict[str, float]:
    """CLEAR-MOT counts of one sequence, as py-motmetrics counts them.

    Per frame: (1) each ground-truth box keeps the prediction its identity was
    last matched to (in any earlier frame) if that track id is present and
    IoU >= threshold; (2) the remaining boxes are matched by min-cost
    Hungarian on distance `1 - IoU` (pairs with IoU >= threshold only). A
    match in (2) to a track id other than the one the identity was last
    matched to (ever) is an ID switch. A fragmentation is a run of missed
    frames between two tracked frames of one identity (frames where the
    identity is absent from the ground truth do not count).

    Args:
      seq: one sequence without ignored boxes (see `remove_ignored`).
      iou_threshold: the IoU a match needs.

    Returns:
      Python ints: `num_gt`, `num_predictions`, `matches` (true positives,
      switches included), `false_positives`, `false_negatives`,
      `id_switches`, `fragmentations`, `num_gt_ids`; `mostly_tracked`,
      `partially_tracked`, `mostly_lost`: the *number* of ground-truth
      identities matched in >= 80%, in [20%, 80%), and in < 20% of the frames
      they appear in (motmetrics' bounds); and `iou_sum` (float), the summed
      IoU of the matches, so that MOTP = iou_sum / max(1, matches).
    """
    return _clear_mot(_checked(seq), _check_threshold(iou_threshold))


def _clear_mot(seq: SequenceData, iou_threshold: float) -> dict[str, float]:
    """`clear_mot` of a checked sequence."""
    last_match = {}  # gt id -> track id it was last matched to (motmetrics' `m`)
    appearances = collections.Counter()  # gt id -> frames present
    tracked = collections.Counter()  # gt id -> frames matched
    in_gap = {}  # gt id -> missed since its last match (only once ever matched)
    counts = collections.Counter()
    iou_sum = 0.0
    for g, p in _frames(seq):
        oids = seq.gt_ids[g].tolist()  # [n]
        hids = seq.pred_ids[p].tolist()  # [m]
        matched_o = np.zeros(len(oids), dtype=bool)  # [n]
        matched_h = np.zeros(len(hids), dtype=bool)  # [m]
        if oids and hids:
            iou = _iou(seq.gt_boxes[g], seq.pred_boxes[p])  # [n, m]
            valid = _matchable(iou, iou_threshold)  # [n, m]
            column = {h: j for j, h in enumerate(hids)}
            # (1) Carry on established correspondences.
            for i, o in enumerate(oids):
                j = column.get(last_match.get(o))
                if j is not None and not matched_h[j] and valid[i, j]:
                    matched_o[i] = matched_h[j] = True
                    iou_sum += iou[i, j]
            # (2) Hungarian on the rest.
            costs = np.where(valid, 1.0 - iou, np.nan)  # [n, m]
            costs[matched_o, :] = np.nan
            costs[:, matched_h] = np.nan
            for i, j in zip(*_motmetrics_assignment(costs)):
                o, h = oids[i], hids[j]
                if o in last_match and last_match[o] != h:
                    counts["id_switches"] += 1
                last_match[o] = h
                matched_o[i] = matched_h[j] = True
                iou_sum += iou[i, j]
        for o, hit in zip(oids, matched_o.tolist()):
            appearances[o] += 1
            if hit:
                tracked[o] += 1
                if in_gap.get(o):
                    counts["fragmentations"] += 1
                in_gap[o] = False
            elif o in in_gap:
                in_gap[o] = True
        counts["matches"] += int(matched_o.sum())
        counts["false_negatives"] += int((~matched_o).sum())
        counts["false_positives"] += int((~matched_h).sum())
    ratios = np.array([tracked[o] / appearances[o] for o in appearances])  # [num_gt_ids]
    mostly_tracked = int(np.sum(ratios >= 0.8))
    mostly_lost = int(np.sum(ratios < 0.2))
    return {
        "num_gt": int(seq.gt_ids.size),
        "num_predictions": int(seq.pred_ids.size),
        "matches": counts["matches"],
        "false_positives": counts["false_positives"],
        "false_negatives": counts["false_negatives"],
        "id_switches": counts["id_switches"],
        "fragmentations": counts["fragmentations"],
        "num_gt_ids": len(appearances),
        "mostly_tracked": mostly_tracked,
        "partially_tracked": len(appearances) - mostly_tracked - mostly_lost,
        "mostly_lost": mostly_lost,
        "iou_sum": float(iou_sum),
    }


def identity_metrics(seq: SequenceData, iou_threshold: float = 0.5) -> dict[str, int]:
    """Identity counts (Ristani et al. 2016) of one sequence.

    Ground-truth and predicted trajectories are matched one-to-one (each may
    stay unmatched) so that IDTP, the number of frames in which matched
    trajectories have IoU >= threshold, is largest. This is the optimum of
    motmetrics'/TrackEval's min-cost matching, whose cost IDFN + IDFP equals
    num_gt + num_predictions - 2 IDTP.

    Args:
      seq: one sequence without ignored boxes (see `remove_ignored`).
      iou_threshold: the IoU a frame needs to count for a pair.

    Returns:
      Python ints `idtp`, `idfp` (= num_predictions - idtp) and `idfn`
      (= num_gt - idtp).
    """
    return _identity_metrics(_checked(seq), _check_threshold(iou_threshold))


def _identity_metrics(seq: SequenceData, iou_threshold: float) -> dict[str, int]:
    """`identity_metrics` of a checked sequence."""
    gt_ids, gt_index = np.unique(seq.gt_ids, return_inverse=True)  # [I], [G]
    pred_ids, pred_index = np.unique(seq.pred_ids, return_inverse=True)  # [J], [P]
    overlap = np.zeros((gt_ids.size, pred_ids.size))  # [I, J] frames with IoU >= thr
    for g, p in _frames(seq):
        if g.size and p.size:
            rows, cols = np.nonzero(
                _matchable(_iou(seq.gt_boxes[g], seq.pred_boxes[p]), iou_threshold)
            )  # [K], [K]
            # Ids are unique within a frame, so no (row, col) pair repeats.
            overlap[gt_index[g[rows]], pred_index[p[cols]]] += 1
    rows, cols = scipy.optimize.linear_sum_assignment(overlap, maximize=True)
    idtp = int(overlap[rows, cols].sum())
    return {
        "idtp": idtp,
        "idfp": int(seq.pred_ids.size) - idtp,
        "idfn": int(seq.gt_ids.size) - idtp,
    }


def _hota_final(tp, fn, fp, assa, loca) -> dict[str, np.ndarray]:
    """TrackEval's `_compute_final_fields` for the fields reported here."""
    deta = tp / np.maximum(1, tp + fn + fp)  # [A]
    return {
        "hota": np.sqrt(deta * assa),
        "deta": deta,
        "assa": assa,
        "loca": loca,
        "tp": tp,
        "fn": fn,
        "fp": fp,
    }


def hota(seq: SequenceData) -> dict[str, np.ndarray]:
    """HOTA of one sequence at each alpha, as TrackEval's `HOTA.eval_sequence`.

    The similarity is IoU. Per frame, detections are matched by Hungarian
    maximising IoU times the global alignment score of their two identities
    (soft co-occurrence over the whole sequence); a match counts at alpha if
    its IoU >= alpha. With no predictions or no ground truth at all, HOTA,
    DetA and AssA are 0 and LocA is 1 (TrackEval).

    Args:
      seq: one sequence without ignored boxes (see `remove_ignored`).

    Returns:
      `hota`, `deta`, `assa`, `loca` (float64 `[A]`, A = 19 alphas of
      `HOTA_ALPHAS`) and the detection counts `tp`, `fn`, `fp` (float64
      `[A]`); `combine_hota` merges several of these.
    """
    return _hota(_checked(seq))


def _hota(seq: SequenceData) -> dict[str, np.ndarray]:
    """`hota` of a checked sequence."""
    num_alphas = HOTA_ALPHAS.size
    zeros = np.zeros(num_alphas)  # [A]
    num_gt, num_pred = seq.gt_ids.size, seq.pred_ids.size
    if num_gt == 0 or num_pred == 0:
        fn = np.full(num_alphas, float(num_gt))  # [A]
        fp = np.full(num_alphas, float(num_pred))  # [A]
        return _hota_final(zeros, fn, fp, zeros, np.ones(num_alphas))

    gt_ids, gt_index = np.unique(seq.gt_ids, return_inverse=True)  # [I], [G]
    pred_ids, pred_index = np.unique(seq.pred_ids, return_inverse=True)  # [J], [P]
    gt_count = np.bincount(gt_index, minlength=gt_ids.size)[:, None].astype(float)  # [I, 1]
    pred_count = np.bincount(pred_index, minlength=pred_ids.size)[None, :].astype(float)  # [1, J]

    # Pass 1: global alignment score between identities.
    frames = []
    potential = np.zeros((gt_ids.size, pred_ids.size))  # [I, J]
    for g, p in _frames(seq):
        sim = _iou(seq.gt_boxes[g], seq.pred_boxes[p])  # [n, m]
        frames.append((gt_index[g], pred_index[p], sim))
        if g.size == 0 or p.size == 0:
            continue
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim  # [n, m]
        mask = denom > _EPS
        sim_iou = np.zeros_like(sim)  # [n, m]
        sim_iou[mask] = sim[mask] / denom[mask]
        potential[gt_index[g][:, None], pred_index[p][None, :]] += sim_iou
    alignment = potential / (gt_count + pred_count - potential)  # [I, J]

    # Pass 2: per-frame matching, counted at every alpha.
    tp, fn, fp, loca_sum = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()  # [A]
    pairs = []  # (alpha index [K'], gt identity [K'], pred identity [K']) of matches
    for gi, pi, sim in frames:
        if gi.size == 0 or pi.size == 0:
            fn += gi.size
            fp += pi.size
            continue
        score = alignment[gi[:, None], pi[None, :]] * sim  # [n, m]
        rows, cols = scipy.optimize.linear_sum_assignment(-score)  # [K], [K]
        matched_sim = sim[rows, cols]  # [K]
        hit = matched_sim[None, :] >= HOTA_ALPHAS[:, None] - _EPS  # [A, K]
        num_hit = hit.sum(1)  # [A]
        tp += num_hit
        fn += gi.size - num_hit
        fp += pi.size - num_hit
        loca_sum += np.where(hit, matched_sim[None, :], 0.0).sum(1)
        a, k = np.nonzero(hit)  # [K'], [K']
        pairs.append((a, gi[rows[k]], pi[cols[k]]))

    # AssA: mean over matches of the association Jaccard of their identities.
    a, gi, pi = (np.concatenate([x[i] for x in pairs] + [np.zeros(0, int)]) for i in range(3))
    key = (a * gt_ids.size + gi) * pred_ids.size + pi  # [K'] one per (alpha, gt id, pred id)
    key, matches = np.unique(key, return_counts=True)  # [U], [U]
    a, rest = np.divmod(key, gt_ids.size * pred_ids.size)  # [U], [U]
    gi, pi = np.divmod(rest, pred_ids.size)  # [U], [U]
    matches = matches.astype(float)
    ass = matches / np.maximum(1, gt_count[gi, 0] + pred_count[0, pi] - matches)  # [U]
    assa = np.bincount(a, weights=matches * ass, minlength=num_alphas) / np.maximum(1, tp)  # [A]
    loca = np.maximum(1e-10, loca_sum) / np.maximum(1e-10, tp)  # [A]
    return _hota_final(tp, fn, fp, assa, loca)


def combine_hota(results: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-alpha HOTA of several sequences together, as TrackEval's `combine_sequences`.

    Args:
      results: `hota` outputs of the sequences.

    Returns:
      The same keys as `hota`: TP/FN/FP summed, AssA and LocA averaged with
      weights TP, DetA and HOTA recomputed. No sequences gives HOTA 0, LocA 1.
    """
    zeros = np.zeros(HOTA_ALPHAS.size)  # [A]
    tp = sum((r["tp"] for r in results), zeros)  # [A]
    fn = sum((r["fn"] for r in results), zeros)  # [A]
    fp = sum((r["fp"] for r in results), zeros)  # [A]
    assa = sum((r["assa"] * r["tp"] for r in results), zeros) / np.maximum(1, tp)  # [A]
    loca_weighted = sum((r["loca"] * r["tp"] for r in results), zeros)  # [A]
    loca = np.maximum(1e-10, loca_weighted) / np.maximum(1e-10, tp)  # [A]
    return _hota_final(tp, fn, fp, assa, loca)


def evaluate_sequences(
    sequences: Sequence[SequenceData], iou_threshold: float = 0.5
) -> dict[str, float]:
    """All metrics over a set of sequences.

    Sequences with `gt_ignore` go through `remove_ignored` first. Counts are
    summed over sequences before the ratios are taken (motmetrics' "OVERALL",
    TrackEval's combined sequences).

    Args:
      sequences: the sequences; identities are per sequence.
      iou_threshold: the IoU a CLEAR-MOT or identity match needs (and the
        `remove_ignored` threshold). HOTA uses its own alphas.

    Returns:
      Python floats `mota`, `motp` (mean IoU of matches), `idf1`, `idp`,
      `idr`, `hota`, `deta`, `assa`, `loca` (means over alphas), `precision`,
      `recall`; Python ints `id_switches`, `fragmentations`,
      `false_positives`, `false_negatives`, `num_gt`, `num_predictions`,
      `mostly_tracked`, `mostly_lost` (numbers of ground-truth identities,
      see `clear_mot`), `num_sequences`. Never NaN: see the module docstring.
    """
    iou_threshold = _check_threshold(iou_threshold)
    clear = collections.Counter()
    ident = collections.Counter()
    hotas = []
    for seq in sequences:
        seq = remove_ignored(seq, iou_threshold)  # Checked, without ignored boxes.
        clear.update(_clear_mot(seq, iou_threshold))
        ident.update(_identity_metrics(seq, iou_threshold))
        hotas.append(_hota(seq))
    h = combine_hota(hotas)
    num_gt, num_pred, tp = clear["num_gt"], clear["num_predictions"], clear["matches"]
    fn, fp, idsw = clear["false_negatives"], clear["false_positives"], clear["id_switches"]
    idtp = ident["idtp"]
    return {
        "mota": float((num_gt - fn - fp - idsw) / max(1, num_gt)),
        "motp": float(clear["iou_sum"] / max(1, tp)),
        "idf1": float(2 * idtp / max(1, num_gt + num_pred)),
        "idp": float(idtp / max(1, num_pred)),
        "idr": float(idtp / max(1, num_gt)),
        "hota": float(np.mean(h["hota"])),
        "deta": float(np.mean(h["deta"])),
        "assa": float(np.mean(h["assa"])),
        "loca": float(np.mean(h["loca"])),
        "id_switches": idsw,
        "fragmentations": clear["fragmentations"],
        "false_positives": fp,
        "false_negatives": fn,
        "num_gt": num_gt,
        "num_predictions": num_pred,
        "mostly_tracked": clear["mostly_tracked"],
        "mostly_lost": clear["mostly_lost"],
        "precision": float(tp / max(1, tp + fp)),
        "recall": float(tp / max(1, num_gt)),
        "num_sequences": len(sequences),
    }
