"""Verification and identification metrics: hand-computed values, sklearn, brute force."""

import numpy as np
import pytest
import sklearn.metrics

from jaxvision.metrics import verification


def _random_pairs(seed: int, num_pairs: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Scores rounded to 2 decimals (so many ties); genuine pairs score higher."""
    rng = np.random.default_rng(seed)
    same = rng.random(num_pairs) < 0.4
    scores = np.round(rng.normal(size=num_pairs) * 0.3 + 0.4 * same, 2)
    return scores, same


def _accuracy(scores, same, threshold):
    return np.mean((scores >= threshold) == same)


# --- cosine_similarity ---------------------------------------------------------


def test_cosine_similarity_hand_computed_and_zero_rows():
    a = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[4.0, 3.0], [-2.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    got = verification.cosine_similarity(a, b)
    assert got.dtype == np.float64
    # 24 / 25; opposite; a zero row; two zero rows.
    np.testing.assert_allclose(got, [0.96, -1.0, 0.0, 0.0], rtol=1e-12, atol=0)


def test_cosine_similarity_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        verification.cosine_similarity(np.ones((3, 2)), np.ones((3, 4)))


# --- best_threshold ------------------------------------------------------------


def test_best_threshold_hand_computed_smallest_of_tied_maximizers():
    scores = np.array([0.1, 0.3, 0.35, 0.6, 0.7, 0.9])
    same = np.array([False, False, True, False, True, True])
    # Correct decisions (of 6) for "accept scores above":
    #   -inf: 3 | 0.2: 4 | 0.325: 5 | 0.475: 4 | 0.65: 5 | 0.8: 4 | +inf: 3.
    # 0.325 and 0.65 tie at 5/6; the smaller wins.
    got = verification.best_threshold(scores, same)
    assert got == pytest.approx(0.325, abs=1e-12)
    assert _accuracy(scores, same, got) == pytest.approx(5 / 6)
    # Order of the pairs does not matter.
    perm = np.array([4, 0, 5, 2, 1, 3])
    assert verification.best_threshold(scores[perm], same[perm]) == got


def test_best_threshold_infinite_when_one_class():
    scores = np.array([0.2, 0.5, 0.5, 0.9])
    # All genuine: accepting everything is right, and -inf is the smallest such.
    assert verification.best_threshold(scores, np.ones(4, bool)) == -np.inf
    # All impostors: only +inf rejects everything.
    assert verification.best_threshold(scores, np.zeros(4, int)) == np.inf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_threshold_matches_brute_force(seed):
    scores, same = _random_pairs(seed, num_pairs=300)
    values = np.unique(scores)
    candidates = np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2, [np.inf]])
    accuracies = np.array([_accuracy(scores, same, t) for t in candidates])  # O(P^2)
    best = accuracies.max()
    want = candidates[np.flatnonzero(accuracies == best)[0]]
    got = verification.best_threshold(scores, same)
    assert got == pytest.approx(want, abs=1e-12)
    assert _accuracy(scores, same, got) == best
    # No threshold at all does better, e.g. one placed at a score itself.
    assert all(_accuracy(scores, same, t) <= best for t in values)


# --- ten_fold_accuracy ---------------------------------------------------------


def test_ten_fold_accuracy_two_folds_hand_computed():
    # Fold 3: scores 0.1 F, 0.4 T, 0.65 F, 0.9 T.
    # Fold 7: scores 0.2 F, 0.5 F, 0.7 T, 0.8 T.
    # Testing fold 3: fold 7 is separated at 0.6 (4/4); on fold 3, 0.6 accepts
    #   0.65 F (wrong) and 0.9 T, rejects 0.1 F and 0.4 T (wrong): 2/4 = 0.5.
    # Testing fold 7: on fold 3, 0.25 and 0.775 both get 3/4; the smaller, 0.25,
    #   accepts 0.5 F (wrong), 0.7 T, 0.8 T and rejects 0.2 F: 3/4 = 0.75.
    # Mean 0.625, population std 0.125, mean threshold (0.6 + 0.25) / 2 = 0.425.
    scores = np.array([0.1, 0.2, 0.4, 0.5, 0.65, 0.7, 0.9, 0.8])
    same = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    folds = np.array([3, 7, 3, 7, 3, 7, 3, 7])
    got = verification.ten_fold_accuracy(scores, same, folds)
    assert set(got) == {"accuracy", "accuracy_std", "threshold"}
    assert got["accuracy"] == pytest.approx(0.625)
    assert got["accuracy_std"] == pytest.approx(0.125)
    assert got["threshold"] == pytest.approx(0.425)


def test_ten_fold_accuracy_three_folds_hand_computed():
    # Fold 0: 0.2 F, 0.8 T   Fold 1: 0.35 F, 0.7 T   Fold 2: 0.4 T, 0.6 F.
    # Test 0: train {0.35 F, 0.4 T, 0.6 F, 0.7 T}: 0.375 and 0.65 give 3/4,
    #   take 0.375: fold 0 (0.2 F, 0.8 T) is all right: 1.0.
    # Test 1: train {0.2 F, 0.4 T, 0.6 F, 0.8 T}: 0.3 and 0.7 give 3/4, take
    #   0.3: fold 1 (0.35 F, 0.7 T) accepts the impostor: 0.5.
    # Test 2: train {0.2 F, 0.35 F, 0.7 T, 0.8 T}: 0.525 gives 4/4: fold 2
    #   (0.4 T, 0.6 F) is all wrong: 0.0.
    # Mean 0.5, std sqrt((0.5^2 + 0 + 0.5^2) / 3), threshold (0.375 + 0.3 + 0.525) / 3.
    scores = np.array([0.2, 0.8, 0.35, 0.7, 0.4, 0.6])
    same = np.array([False, True, False, True, True, False])
    folds = np.array([0, 0, 1, 1, 2, 2])
    got = verification.ten_fold_accuracy(scores, same, folds)
    assert got["accuracy"] == pytest.approx(0.5)
    assert got["accuracy_std"] == pytest.approx(np.sqrt(0.5 / 3))
    assert got["threshold"] == pytest.approx((0.375 + 0.3 + 0.525) / 3)


def test_ten_fold_accuracy_matches_per_fold_reference():
    scores, same = _random_pairs(3, num_pairs=600)
    folds = np.repeat(np.arange(10), 60)
    accuracies, thresholds = [], []
    for k in range(10):
        t = verification.best_threshold(scores[folds != k], same[folds != k])
        accuracies.append(_accuracy(scores[folds == k], same[folds == k], t))
        thresholds.append(t)
    got = verification.ten_fold_accuracy(scores, same, folds)
    assert got["accuracy"] == pytest.approx(np.mean(accuracies))
    assert got["accuracy_std"] == pytest.approx(np.std(accuracies))
    assert got["threshold"] == pytest.approx(np.mean(thresholds))
    assert 0.6 < got["accuracy"] < 1.0  # the data is informative but not separable


def test_ten_fold_accuracy_needs_two_folds():
    with pytest.raises(ValueError, match="at least 2 distinct folds"):
        verification.ten_fold_accuracy(
            np.array([0.1, 0.9]), np.array([0, 1]), np.array([4, 4])
        )


# --- roc_curve, roc_auc, tar_at_far ---------------------------------------------


_HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
_HAND_SAME = np.array([True, False, True, True, False, True, False, False])


def test_roc_curve_hand_computed():
    far, tar, thresholds = verification.roc_curve(_HAND_SCORES[::-1], _HAND_SAME[::-1])
    np.testing.assert_allclose(far, [0, 0, 0.25, 0.25, 0.25, 0.5, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(tar, [0, 0.25, 0.25, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(thresholds, np.concatenate([[np.inf], _HAND_SCORES]))
    # 12 of the 16 genuine/impostor orderings are right.
    assert verification.roc_auc(far, tar) == pytest.approx(0.75)


def test_tar_at_far_hand_computed():
    got = verification.tar_at_far(
        _HAND_SCORES, _HAND_SAME, [0.0, 0.1, 0.25, 0.4, 0.5, 1.0]
    )
    assert got == pytest.approx(
        {0.0: 0.25, 0.1: 0.25, 0.25: 0.75, 0.4: 0.75, 0.5: 1.0, 1.0: 1.0}
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_and_auc_match_sklearn(seed):
    scores, same = _random_pairs(seed)
    assert np.unique(scores).size < scores.size  # ties are exercised
    far, tar, thresholds = verification.roc_curve(scores, same)
    want_far, want_tar, want_thresholds = sklearn.metrics.roc_curve(
        same, scores, drop_intermediate=False
    )
    np.testing.assert_allclose(far, want_far, rtol=1e-12, atol=0)
    np.testing.assert_allclose(tar, want_tar, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(thresholds, want_thresholds)
    assert verification.roc_auc(far, tar) == pytest.approx(
        sklearn.metrics.roc_auc_score(same, scores), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tar_at_far_matches_brute_force(seed):
    scores, same = _random_pairs(seed)
    targets = [0.0, 1e-3, 0.01, 0.05, 0.1, 0.3, 1.0]
    got = verification.tar_at_far(scores, same, targets)
    genuine, impostor = scores[same], scores[~same]
    for target in targets:
        best = 0.0
        for t in np.concatenate([np.unique(scores), [np.inf]]):
            if np.mean(impostor >= t) <= target:
                best = max(best, np.mean(genuine >= t))
        assert got[target] == pytest.approx(best, abs=1e-12), target


def test_one_class_roc_is_nan_free():
    scores = np.array([0.3, 0.1, 0.3, 0.8])
    far, tar, thresholds = verification.roc_curve(scores, np.ones(4, bool))
    np.testing.assert_array_equal(far, np.zeros(4))  # no impostors: FAR is 0
    np.testing.assert_allclose(tar, [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.3, 0.1])
    assert verification.tar_at_far(scores, np.ones(4, bool), [0.0]) == {0.0: 1.0}
    far, tar, _ = verification.roc_curve(scores, np.zeros(4, bool))
    np.testing.assert_array_equal(tar, np.zeros(4))  # no genuine pairs: TAR is 0
    np.testing.assert_allclose(far, [0.0, 0.25, 0.75, 1.0])
    assert verification.tar_at_far(scores, np.zeros(4, bool), [0.5]) == {0.5: 0.0}


def test_pair_inputs_are_validated():
    with pytest.raises(ValueError, match="finite"):
        verification.roc_curve(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="equal length"):
        verification.best_threshold(np.array([0.1, 0.2]), np.array([1]))
    with pytest.raises(ValueError, match="0/1"):
        verification.best_threshold(np.array([0.1, 0.2]), np.array([1, 2]))
    with pytest.raises(ValueError, match=">= 0"):
        verification.tar_at_far(np.array([0.1, 0.2]), np.array([0, 1]), [-0.1])


def test_perfectly_separable_pairs():
    rng = np.random.default_rng(0)
    same = np.arange(200) % 2 == 0
    scores = np.where(same, rng.uniform(0.6, 1.0, 200), rng.uniform(-1.0, 0.4, 200))
    got = verification.ten_fold_accuracy(scores, same, np.arange(200) % 10)
    assert got["accuracy"] == 1.0
    assert got["accuracy_std"] == 0.0
    assert 0.4 < got["threshold"] < 0.6
    far, tar, _ = verification.roc_curve(scores, same)
    assert verification.roc_auc(far, tar) == pytest.approx(1.0, abs=1e-12)
    assert verification.tar_at_far(scores, same, [0.0]) == {0.0: 1.0}


# --- cmc, split_gallery_probes ---------------------------------------------------


def test_cmc_hand_computed():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # identities 10, 20, 30
    gallery_labels = np.array([10, 20, 30])
    probes = np.array(
        [
            [2.0, 0.1],  # 10: nearest is 10 -> rank 1
            [1.0, 0.5],  # 20: cos 0.894 to 10, 0.447 to 20 -> rank 2
            [
                0.0,
                1.0,
            ],  # 30: 20 (cos 1), then 10 and 30 tie at 0; 10 has the lower index -> rank 3
            [5.0, 5.0],  # 99: not in the gallery -> ignored
            [-3.0, -1.0],  # 30: nearest is 30 -> rank 1
        ]
    )
    probe_labels = np.array([10, 20, 30, 99, 30])
    got = verification.cmc(gallery, gallery_labels, probes, probe_labels)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [0.5, 0.75, 1.0])  # 3 identities -> 3 ranks
    got = verification.cmc(gallery, gallery_labels, probes, probe_labels, max_rank=2)
    np.testing.assert_allclose(got, [0.5, 0.75])


def test_cmc_no_probe_in_gallery_gives_zeros():
    got = verification.cmc(
        np.eye(2), np.array([0, 1]), np.ones((3, 2)), np.array([5, 6, 7])
    )
    np.testing.assert_array_equal(got, [0.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_cmc_matches_stable_sort_reference(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    # Several gallery images per identity, embeddings on a coarse grid (ties).
    gallery_labels = rng.integers(0, 15, size=40)
    gallery = rng.integers(-2, 3, size=(40, 3)).astype(float)
    probe_labels = rng.integers(0, 18, size=70)  # some identities not in the gallery
    probes = rng.integers(-2, 3, size=(70, 3)).astype(float)
    # Tiny blocks, so the probes are processed in many chunks.
    monkeypatch.setattr(verification, "_CMC_BLOCK_ELEMENTS", 7 * 40)
    got = verification.cmc(gallery, gallery_labels, probes, probe_labels, max_rank=12)

    def unit(x):
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n > 0)

    sim = unit(probes) @ unit(gallery).T
    first_hits = []
    for q in range(len(probes)):
        if probe_labels[q] not in gallery_labels:
            continue
        order = np.argsort(-sim[q], kind="stable")
        first_hits.append(np.flatnonzero(gallery_labels[order] == probe_labels[q])[0])
    num_ranks = min(12, np.unique(gallery_labels).size)
    want = [np.mean(np.array(first_hits) <= r) for r in range(num_ranks)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert 0 < got[0] < got[-1]


def test_split_gallery_probes_hand_computed():
    gallery, probes = verification.split_gallery_probes(np.array([5, 3, 5, 7, 3, 5, 9]))
    np.testing.assert_array_equal(gallery, [0, 1, 3, 6])  # first 5, 3, 7, 9
    np.testing.assert_array_equal(
        probes, [2, 4, 5]
    )  # 7 and 9 have one image: gallery only


# --- zero embeddings -----------------------------------------------------------


def test_zero_embeddings_give_zero_similarity_and_finite_metrics():
    rng = np.random.default_rng(0)
    num_pairs = 80
    same = np.arange(num_pairs) % 2 == 0
    a = rng.normal(size=(num_pairs, 8))
    b = np.where(
        same[:, None],
        a + 0.5 * rng.normal(size=(num_pairs, 8)),
        rng.normal(size=(num_pairs, 8)),
    )
    a[3] = 0.0  # impostor pair with one zero embedding
    b[4] = 0.0  # genuine pair with one zero embedding
    a[6] = b[6] = 0.0  # both zero
    scores = verification.cosine_similarity(a, b)
    np.testing.assert_array_equal(scores[[3, 4, 6]], 0.0)
    assert np.all(np.isfinite(scores))

    assert np.isfinite(verification.best_threshold(scores, same))
    folds = np.arange(num_pairs) % 4
    result = verification.ten_fold_accuracy(scores, same, folds)
    assert all(np.isfinite(v) for v in result.values())
    assert result["accuracy"] > 0.8
    far, tar, thresholds = verification.roc_curve(scores, same)
    assert np.all(np.isfinite(far)) and np.all(np.isfinite(tar))
    assert np.all(np.isfinite(thresholds[1:]))  # thresholds[0] is +inf by definition
    assert np.isfinite(verification.roc_auc(far, tar))
    assert all(
        np.isfinite(v)
        for v in verification.tar_at_far(scores, same, [1e-2, 0.1]).values()
    )

    labels = np.arange(num_pairs) // 2
    gallery_idx, probe_idx = verification.split_gallery_probes(
        np.concatenate([labels, labels])
    )
    embeddings = np.concatenate([a, b])
    got = verification.cmc(
        embeddings[gallery_idx],
        np.concatenate([labels, labels])[gallery_idx],
        embeddings[probe_idx],
        np.concatenate([labels, labels])[probe_idx],
    )
    assert got.shape == (10,)
    assert np.all(np.isfinite(got))
