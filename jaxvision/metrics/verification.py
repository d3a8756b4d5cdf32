"""Face/identity verification and identification metrics, in plain NumPy.

Verification compares *pairs* of images: each pair has a similarity score
(here the cosine similarity of the two embeddings) and a label, `same` (both
images show one identity: a genuine pair) or not (an impostor pair). A
threshold `t` turns scores into decisions: "same if score >= t".

- TAR(t) (true accept rate) = genuine pairs with score >= t / genuine pairs.
- FAR(t) (false accept rate) = impostor pairs with score >= t / impostor pairs.
- The ROC curve is (FAR, TAR) over all thresholds, its AUC the area under it,
  and TAR@FAR=x the best TAR among thresholds with FAR <= x (the IJB-B/C
  headline number, e.g. TAR@FAR=1e-4).

The LFW protocol (also used for CFP-FP, AgeDB-30, CALFW, CPLFW) splits the
pairs into 10 folds (LFW: 6,000 pairs, 600 per fold, half genuine). For each
fold, the threshold that maximizes accuracy on the other 9 folds is applied to
the held-out fold; the reported figure is the mean (and population std) of the
10 held-out accuracies. `ten_fold_accuracy` follows insightface's
`recognition/.../eval/verification.py` (consecutive `KFold(10)` folds,
`np.std`), except that the threshold is chosen exactly, among all midpoints
between consecutive distinct scores, rather than on a fixed grid
(insightface: squared distances of unit embeddings, `2 - 2 cos`, on
`np.arange(0, 4, 0.01)`), and that tied maximizers resolve to the smallest
similarity threshold (insightface's grid `argmax` takes the smallest distance,
i.e. the largest similarity). For LFW's folds pass
`folds = np.repeat(np.arange(10), 600)`.

Identification (`cmc`) ranks a gallery of enrolled embeddings for each probe;
CMC[r] is the fraction of probes whose identity is found within the top r + 1
gallery entries (CMC[0] is rank-1 accuracy).
"""

from collections.abc import Sequence

import numpy as np

# Elements of one probes-by-gallery similarity block in `cmc` (about 80 MB of
# float64), so memory stays bounded for any number of probes.
_CMC_BLOCK_ELEMENTS = 10_000_000


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Rows of a `[N, D]` array scaled to unit L2 norm; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a [N, D] array of embeddings, got shape {x.shape}."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or inf values; embeddings must be finite.")
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # [N, 1]
    return x / np.maximum(norms, np.finfo(np.float64).tiny)  # [N, D]


def _check_pairs(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`scores` as float64 `[P]` and `same` as bool `[P]`, or a ValueError."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same)
    if scores.ndim != 1 or scores.shape != same.shape or scores.size == 0:
        raise ValueError(
            "scores and same must be non-empty 1-D arrays of equal length, got shapes "
            f"{scores.shape} and {same.shape}."
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            "scores hold NaN or inf values; similarity scores must be finite."
        )
    if same.dtype != bool and not np.all((same == 0) | (same == 1)):
        raise ValueError("same must hold booleans or 0/1 labels (1 = same identity).")
    return scores, same.astype(bool)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows.

    Args:
      a: `[P, D]` embeddings (any norm).
      b: `[P, D]` embeddings (any norm).

    Returns:
      `[P]` float64 similarities in `[-1, 1]`; a pair with an all-zero row
      scores 0.0 (never NaN).
    """
    a = _unit_rows(a, "a")  # [P, D]
    b = _unit_rows(b, "b")  # [P, D]
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape [P, D], got {a.shape} and {b.shape}."
        )
    return np.clip(np.sum(a * b, axis=1), -1.0, 1.0)  # [P]


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that maximizes accuracy of "same if score >= threshold".

    Candidates are -inf (accept all), +inf (reject all) and every midpoint
    between consecutive distinct sorted scores, so every distinct decision
    rule is tried exactly once. O(P log P): one sort and cumulative counts.

    Args:
      scores: `[P]` similarity scores (higher = more alike).
      same: `[P]` booleans, True for a genuine pair.

    Returns:
      The maximizing threshold; ties resolve to the smallest one.
    """
    scores, same = _check_pairs(scores, same)  # [P], [P]
    values, inverse = np.unique(scores, return_inverse=True)  # [U] sorted, [P]
    pos_at = np.bincount(inverse, weights=same, minlength=values.size)  # [U]
    neg_at = np.bincount(inverse, weights=~same, minlength=values.size)  # [U]
    num_pos = pos_at.sum()
    # A threshold just above values[j] accepts exactly the scores > values[j]:
    # correct = positives above values[j] + negatives at or below it.
    correct_above = num_pos - np.cumsum(pos_at) + np.cumsum(neg_at)  # [U]
    correct = np.concatenate([[num_pos], correct_above])  # [U + 1]
    lo, hi = values[:-1], values[1:]  # [U - 1]
    mid = lo + (hi - lo) / 2  # [U - 1]
    # Adjacent floats can round the midpoint down onto `lo`; `hi` then gives
    # the same decisions as the true midpoint.
    mid = np.where(mid > lo, mid, hi)  # [U - 1]
    thresholds = np.concatenate([[-np.inf], mid, [np.inf]])  # [U + 1], ascending
    return float(thresholds[np.argmax(correct)])  # argmax: the first (smallest)


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """Verification accuracy under the LFW k-fold protocol.

    For each fold, the threshold is `best_threshold` on the pairs of all other
    folds, and accuracy is measured on the fold's own pairs.

    Args:
      scores: `[P]` similarity scores.
      same: `[P]` booleans, True for a genuine pair.
      folds: `[P]` integer fold index of each pair (at least 2 distinct
        values; LFW has 10).

    Returns:
      `{"accuracy": mean held-out accuracy, "accuracy_std": np.std of the
      per-fold accuracies (population std, as insightface), "threshold": mean
      of the per-fold thresholds}` as Python floats. The threshold is +-inf
      (or NaN) only if some fold's best rule accepts or rejects everything.
    """
    scores, same = _check_pairs(scores, same)  # [P], [P]
    folds = np.asarray(folds)
    if folds.shape != scores.shape or not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(
            f"folds must be an integer array of shape {scores.shape} (one fold index per "
            f"pair), got dtype {folds.dtype} and shape {folds.shape}."
        )
    fold_ids = np.unique(folds)  # [K]
    if fold_ids.size < 2:
        raise ValueError(
            f"ten_fold_accuracy needs at least 2 distinct folds, got {fold_ids.size}."
        )
    accuracies, thresholds = [], []
    for k in fold_ids:
        test = folds == k  # [P]
        threshold = best_threshold(scores[~test], same[~test])
        accepted = scores[test] >= threshold  # [P_k]
        accuracies.append(np.mean(accepted == same[test]))
        thresholds.append(threshold)
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "threshold": float(np.mean(thresholds)),
    }


def roc_curve(
    scores: np.ndarray, same: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve: FAR and TAR at every distinct score used as threshold.

    Equal to `sklearn.metrics.roc_curve(same, scores, drop_intermediate=False)`:
    thresholds in decreasing order, starting with `(+inf, FAR 0, TAR 0)`, then
    each distinct score (accepting the pairs with score >= it).

    Args:
      scores: `[P]` similarity scores.
      same: `[P]` booleans, True for a genuine pair.

    Returns:
      `(far, tar, thresholds)`, each `[U + 1]` float64 (U distinct scores).
      Where there are no impostor (genuine) pairs, FAR (TAR) is 0 everywhere
      instead of sklearn's NaN.
    """
    scores, same = _check_pairs(scores, same)  # [P], [P]
    order = np.argsort(-scores, kind="stable")  # [P], descending score
    scores, same = scores[order], same[order]  # [P], [P]
    # The last index of each run of equal scores (and the last pair).
    last = np.flatnonzero(np.diff(scores) != 0)  # [U - 1]
    last = np.concatenate([last, [scores.size - 1]])  # [U]
    tp = np.concatenate([[0], np.cumsum(same)[last]]).astype(np.float64)  # [U + 1]
    fp = np.concatenate([[0], last + 1]) - tp  # [U + 1]
    thresholds = np.concatenate([[np.inf], scores[last]])  # [U + 1]
    far = fp / fp[-1] if fp[-1] > 0 else np.zeros_like(fp)  # [U + 1]
    tar = tp / tp[-1] if tp[-1] > 0 else np.zeros_like(tp)  # [U + 1]
    return far, tar, thresholds


def roc_auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under a ROC curve by the trapezoidal rule.

    Args:
      far: `[N]` false accept rates, sorted (as `roc_curve` returns them).
      tar: `[N]` true accept rates at the same thresholds.

    Returns:
      The area, in `[0, 1]` for a `roc_curve` output.
    """
    far = np.asarray(far, dtype=np.float64)  # [N]
    tar = np.asarray(tar, dtype=np.float64)  # [N]
    if far.ndim != 1 or far.shape != tar.shape:
        raise ValueError(
            f"far and tar must be 1-D arrays of equal length, got {far.shape} and {tar.shape}."
        )
    # By hand: np.trapezoid is NumPy >= 2.0 only and np.trapz is gone in 2.4.
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def tar_at_far(
    scores: np.ndarray, same: np.ndarray, far_targets: Sequence[float]
) -> dict[float, float]:
    """TAR at given FAR levels (the IJB-B/C convention).

    Args:
      scores: `[P]` similarity scores.
      same: `[P]` booleans, True for a genuine pair.
      far_targets: FAR levels, each >= 0 (e.g. `[1e-6, 1e-5, 1e-4]`).

    Returns:
      `{target: TAR}`: the largest TAR over thresholds whose FAR is <= target.
      With no impostor pairs every FAR is 0, so this is the largest TAR (1.0);
      with no genuine pairs it is 0.0.
    """
    far, tar, _ = roc_curve(scores, same)  # [U + 1] each
    result = {}
    for target in far_targets:
        target = float(target)
        if not target >= 0:
            raise ValueError(f"FAR targets must be >= 0, got {target}.")
        # The (+inf, 0, 0) point always qualifies, so the max is over a non-empty set.
        result[target] = float(np.max(tar[far <= target]))
    return result


def cmc(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    probes: np.ndarray,
    probe_labels: np.ndarray,
    max_rank: int = 10,
) -> np.ndarray:
    """Cumulative match characteristic of closed-set identification.

    Each probe's gallery entries are ranked by cosine similarity, descending;
    equal similarities keep gallery order (lower index first), as a stable
    sort does. Ranks count gallery entries, so an identity with several
    gallery images takes its best-ranked one. Probes whose identity has no
    gallery image are ignored (closed set).

    Args:
      gallery: `[G, D]` gallery embeddings (any norm).
      gallery_labels: `[G]` identity of each gallery embedding.
      probes: `[Q, D]` probe embeddings (any norm).
      probe_labels: `[Q]` identity of each probe.
      max_rank: number of ranks to report, >= 1.

    Returns:
      `[R]` float64 with `R = min(max_rank, distinct gallery identities)`;
      entry r is the fraction of kept probes matched within the top r + 1
      entries (entry 0 is rank-1 accuracy). All zeros if no probe is kept.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}.")
    gallery = _unit_rows(gallery, "gallery")  # [G, D]
    probes = _unit_rows(probes, "probes")  # [Q, D]
    gallery_labels = np.asarray(gallery_labels)  # [G]
    probe_labels = np.asarray(probe_labels)  # [Q]
    if (
        gallery_labels.shape != gallery.shape[:1]
        or probe_labels.shape != probes.shape[:1]
    ):
        raise ValueError(
            "need one label per embedding: gallery_labels must have shape "
            f"{gallery.shape[:1]} and probe_labels {probes.shape[:1]}, got "
            f"{gallery_labels.shape} and {probe_labels.shape}."
        )
    if gallery.shape[1] != probes.shape[1]:
        raise ValueError(
            f"gallery and probes must have the same embedding size, got {gallery.shape[1]} "
            f"and {probes.shape[1]}."
        )
    num_ranks = min(max_rank, np.unique(gallery_labels).size)
    kept = np.isin(probe_labels, gallery_labels)  # [Q]
    probes, probe_labels = probes[kept], probe_labels[kept]  # [Q'] rows
    if probe_labels.size == 0:
        return np.zeros(num_ranks, dtype=np.float64)

    num_gallery = gallery.shape[0]
    block = max(1, _CMC_BLOCK_ELEMENTS // num_gallery)
    gallery_index = np.arange(num_gallery)  # [G]
    ranks = []  # 0-based position of each probe's first correct gallery entry
    for start in range(0, probe_labels.size, block):
        sim = probes[start : start + block] @ gallery.T  # [q, G]
        match = (
            probe_labels[start : start + block, None] == gallery_labels[None, :]
        )  # [q, G]
        masked = np.where(match, sim, -np.inf)  # [q, G]
        first = np.argmax(masked, axis=1)  # [q], lowest index among equal best
        best = masked[np.arange(first.size), first][:, None]  # [q, 1]
        # Entries a stable descending sort puts before `first`: higher
        # similarity, or equal similarity at a lower index.
        ahead = (sim > best) | (
            (sim == best) & (gallery_index < first[:, None])
        )  # [q, G]
        ranks.append(np.sum(ahead, axis=1))  # [q]
    ranks = np.concatenate(ranks)  # [Q']
    return np.mean(ranks[:, None] <= np.arange(num_ranks)[None, :], axis=0)  # [R]


def split_gallery_probes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gallery/probe split for identification from one labelled set.

    The first occurrence (lowest index) of each identity is its gallery
    image; every other image is a probe. Identities with a single image are
    gallery-only (distractors for the other probes).

    Args:
      labels: `[N]` identity of each image.

    Returns:
      `(gallery, probes)`: int64 index arrays `[G]` and `[N - G]`, each in
      increasing order, with `G` the number of distinct identities.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}.")
    _, first = np.unique(labels, return_index=True)  # [G]
    is_gallery = np.zeros(labels.size, dtype=bool)  # [N]
    is_gallery[first] = True
    return np.flatnonzero(is_gallery), np.flatnonzero(~is_gallery)
