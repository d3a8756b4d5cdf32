"""Tracking metrics: motmetrics and TrackEval golden values, and hand-computed cases.

The golden values come from `tests/golden/make_mot_golden.py` (motmetrics
1.4.0, trackeval 1.3.0); neither package is needed here.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.metrics import mot

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "golden")
TUD = ["TUD-Campus", "TUD-Stadtmitte"]
RTOL = 1e-6

# evaluate_sequences key -> motmetrics summary column (motp: ours is 1 - theirs).
MM_RATIOS = {
    "mota": "mota", "idf1": "idf1", "idp": "idp", "idr": "idr",
    "precision": "precision", "recall": "recall",
}
MM_COUNTS = {
    "id_switches": "num_switches", "fragmentations": "num_fragmentations",
    "false_positives": "num_false_positives", "false_negatives": "num_misses",
    "num_gt": "num_objects", "num_predictions": "num_predictions",
    "mostly_tracked": "mostly_tracked", "mostly_lost": "mostly_lost",
}


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(GOLDEN_DIR, "mot_golden.json")) as f:
        return json.load(f)


def _xywh_to_xyxy(rows: np.ndarray) -> np.ndarray:
    """`[N, 4]` x, y, w, h -> x1, y1, x2, y2 (x2 = x + w, as both references compute it)."""
    return np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)  # [N, 4]


def _sequence(gt, pred, gt_ignore=None) -> mot.SequenceData:
    """Rows `frame, id, x, y, w, h` (MOT text format) -> SequenceData."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 6)  # [G, 6]
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 6)  # [P, 6]
    return mot.SequenceData(
        gt_frames=gt[:, 0].astype(int),
        gt_ids=gt[:, 1].astype(int),
        gt_boxes=_xywh_to_xyxy(gt[:, 2:6]),
        pred_frames=pred[:, 0].astype(int),
        pred_ids=pred[:, 1].astype(int),
        pred_boxes=_xywh_to_xyxy(pred[:, 2:6]),
        gt_ignore=None if gt_ignore is None else np.asarray(gt_ignore, dtype=bool),
    )


def _tud(name: str) -> mot.SequenceData:
    """A TUD sequence; x and y shifted by -1 as `mm.io.loadtxt` does (same floats)."""
    rows = []
    for which in ("gt", "test"):
        r = np.loadtxt(os.path.join(GOLDEN_DIR, "mot", name, f"{which}.txt"), delimiter=",")
        r = r[:, :6]  # [N, 6] frame, id, x, y, w, h
        r[:, 2:4] -= 1
        rows.append(r)
    return _sequence(*rows)


def _hand(golden, name: str) -> mot.SequenceData:
    case = golden["hand_cases"][name]
    ignore = case["gt_ignore"] if any(case["gt_ignore"]) else None
    return _sequence(case["gt"], case["pred"], ignore)


@pytest.fixture(scope="module")
def tud_results():
    """evaluate_sequences and hota of each TUD sequence, and of both together."""
    seqs = {name: _tud(name) for name in TUD}
    out = {name: (mot.evaluate_sequences([s]), mot.hota(s)) for name, s in seqs.items()}
    out["OVERALL"] = (mot.evaluate_sequences(list(seqs.values())), None)
    return out


def _assert_matches_motmetrics(got: dict, want: dict):
    for ours, theirs in MM_RATIOS.items():
        np.testing.assert_allclose(got[ours], want[theirs], rtol=RTOL, err_msg=ours)
    np.testing.assert_allclose(got["motp"], 1.0 - want["motp"], rtol=RTOL, err_msg="motp")
    for ours, theirs in MM_COUNTS.items():
        assert got[ours] == want[theirs], ours


def _assert_hota_matches_trackeval(got: dict, want: dict):
    """`got`: a `hota`/`combine_hota` output; `want`: TrackEval's HOTA fields."""
    for ours, theirs in (("hota", "HOTA"), ("deta", "DetA"), ("assa", "AssA"), ("loca", "LocA")):
        np.testing.assert_allclose(got[ours], want[theirs], rtol=RTOL, atol=1e-12, err_msg=ours)
    for ours, theirs in (("tp", "HOTA_TP"), ("fn", "HOTA_FN"), ("fp", "HOTA_FP")):
        np.testing.assert_array_equal(got[ours], want[theirs], err_msg=ours)


def _assert_summary_matches_trackeval(got: dict, want: dict):
    """`got`: an evaluate_sequences output; `want`: TrackEval's hota/clear/identity."""
    for key, field in (("hota", "HOTA"), ("deta", "DetA"), ("assa", "AssA"), ("loca", "LocA")):
        np.testing.assert_allclose(got[key], np.mean(want["hota"][field]), rtol=RTOL, err_msg=key)
    for key, field in (("idf1", "IDF1"), ("idp", "IDP"), ("idr", "IDR")):
        np.testing.assert_allclose(got[key], want["identity"][field], rtol=RTOL, err_msg=key)
    clear = want["clear"]
    assert got["false_positives"] == clear["CLR_FP"]
    assert got["false_negatives"] == clear["CLR_FN"]


# --- golden: TUD-Campus, TUD-Stadtmitte (motmetrics' test data) ------------------------


def test_hota_alphas_are_trackevals(golden):
    np.testing.assert_array_equal(mot.HOTA_ALPHAS, golden["hota_alphas"])


@pytest.mark.parametrize("name", TUD + ["OVERALL"])
def test_tud_matches_motmetrics(golden, tud_results, name):
    got, _ = tud_results[name]
    _assert_matches_motmetrics(got, golden["motmetrics"][name])
    assert got["num_sequences"] == (2 if name == "OVERALL" else 1)


def test_tud_campus_documented_values(tud_results):
    # motmetrics' README / test_motchallenge_files: IDF1 55.8%, MOTA 52.6%.
    got, _ = tud_results["TUD-Campus"]
    assert round(got["idf1"], 4) == 0.5577
    assert round(got["mota"], 4) == 0.5265


@pytest.mark.parametrize("name", TUD)
def test_tud_hota_matches_trackeval(golden, tud_results, name):
    got, per_alpha = tud_results[name]
    want = golden["trackeval"][name]
    _assert_hota_matches_trackeval(per_alpha, want["hota"])
    _assert_summary_matches_trackeval(got, want)
    np.testing.assert_allclose(got["motp"], want["clear"]["MOTP"], rtol=RTOL)


def test_tud_combined_matches_trackeval(golden, tud_results):
    want = golden["trackeval"]["COMBINED"]
    combined = mot.combine_hota([tud_results[name][1] for name in TUD])
    _assert_hota_matches_trackeval(combined, want["hota"])
    _assert_summary_matches_trackeval(tud_results["OVERALL"][0], want)


@pytest.mark.parametrize("name", TUD)
def test_tud_counts_of_lower_level_functions(golden, name):
    seq = _tud(name)
    mm, te = golden["motmetrics"][name], golden["trackeval"][name]
    clear = mot.clear_mot(seq)
    assert clear["matches"] == mm["num_detections"] == te["clear"]["CLR_TP"]
    assert clear["partially_tracked"] == mm["partially_tracked"]
    assert clear["num_gt_ids"] == mm["mostly_tracked"] + mm["partially_tracked"] + mm["mostly_lost"]
    ident = mot.identity_metrics(seq)
    assert ident == {"idtp": mm["idtp"], "idfp": mm["idfp"], "idfn": mm["idfn"]}
    assert ident["idtp"] == te["identity"]["IDTP"]


def test_row_order_across_frames_does_not_matter(tud_results):
    seq = _tud("TUD-Stadtmitte")
    # Frames in reverse order, rows within a frame in their original order.
    gt = np.lexsort((np.arange(seq.gt_ids.size), -seq.gt_frames))
    pred = np.lexsort((np.arange(seq.pred_ids.size), -seq.pred_frames))
    shuffled = mot.SequenceData(
        seq.gt_frames[gt], seq.gt_ids[gt], seq.gt_boxes[gt],
        seq.pred_frames[pred], seq.pred_ids[pred], seq.pred_boxes[pred],
    )
    assert mot.evaluate_sequences([shuffled]) == tud_results["TUD-Stadtmitte"][0]


# --- golden: hand-made cases ---------------------------------------------------------


@pytest.mark.parametrize("name", ["swap_and_miss", "carry_over", "ties", "ignore"])
def test_hand_cases_match_motmetrics(golden, name):
    got = mot.evaluate_sequences([_hand(golden, name)])
    _assert_matches_motmetrics(got, golden["motmetrics"][name])


@pytest.mark.parametrize(
    "name",
    ["swap_and_miss", "carry_over", "ties", "ignore", "only_ignored", "no_predictions", "no_gt"],
)
def test_hand_cases_match_trackeval(golden, name):
    seq = _hand(golden, name)
    want = golden["trackeval"][name]
    _assert_hota_matches_trackeval(mot.hota(mot.remove_ignored(seq)), want["hota"])
    got = mot.evaluate_sequences([seq])
    _assert_summary_matches_trackeval(got, want)
    if name in ("only_ignored", "no_predictions", "no_gt", "ignore", "ties"):
        # Where TrackEval's CLEAR agrees with motmetrics' (see below), and for
        # the empty cases whose conventions we take from TrackEval.
        np.testing.assert_allclose(got["mota"], want["clear"]["MOTA"], rtol=RTOL)
        np.testing.assert_allclose(got["motp"], want["clear"]["MOTP"], rtol=RTOL)
        assert got["id_switches"] == want["clear"]["IDSW"]
        assert got["mostly_lost"] == want["clear"]["ML"]


def test_clear_follows_motmetrics_where_trackeval_differs(golden):
    # carry_over: correspondences are kept across a missed or unannotated frame
    # (motmetrics), not only from the previous frame (TrackEval switches all
    # three); an identity that comes back with a new track is a switch.
    got = mot.clear_mot(_hand(golden, "carry_over"))
    assert got["id_switches"] == golden["motmetrics"]["carry_over"]["num_switches"] == 1
    assert golden["trackeval"]["carry_over"]["clear"]["IDSW"] == 3
    # swap_and_miss: people tracked in 4 of 5 frames are mostly tracked (>= 0.8;
    # TrackEval: > 0.8), one tracked in 1 of 5 is not mostly lost (< 0.2), and
    # a frame without its annotation is no fragmentation.
    got = mot.clear_mot(_hand(golden, "swap_and_miss"))
    assert (got["mostly_tracked"], got["partially_tracked"], got["mostly_lost"]) == (3, 1, 0)
    assert got["fragmentations"] == 1
    assert golden["trackeval"]["swap_and_miss"]["clear"]["MT"] == 2
    assert golden["trackeval"]["swap_and_miss"]["clear"]["Frag"] == 2


def test_ties_follow_row_order(golden):
    # Frame 1 has identical boxes: rows (gt 2, gt 1) x (track 6, track 5) pair
    # up in row order, so frame 3 swaps both. The other order swaps none.
    seq = _hand(golden, "ties")
    assert mot.clear_mot(seq)["id_switches"] == 2
    swapped = dataclasses.replace(seq, gt_ids=np.array([1, 2, 1, 2, 1, 2]))
    assert mot.clear_mot(swapped)["id_switches"] == 0


# --- iou_matrix ---------------------------------------------------------------------


def test_iou_matrix_hand_computed():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 5, 9]], dtype=float)  # last: empty
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [5, 5, 5, 9]], dtype=float)
    got = mot.iou_matrix(a, b)
    want = [
        [1 / 7, 1.0, 0.0, 0.0],  # overlap 1 / (4 + 4 - 1); same box; touching edge
        [0.0, 1 / 4, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # empty boxes never NaN
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert mot.iou_matrix(a, np.zeros((0, 4))).shape == (3, 0)
    with pytest.raises(UserError, match="NaN or inf"):
        mot.iou_matrix(a, np.array([[0, 0, np.nan, 1.0]]))


# --- hand-computed cases ------------------------------------------------------------


def _walk(track_id, frames, x0=0.0, y=0.0):
    """Rows `frame, id, x, y, w, h` of a 10x20 box moving 3 px a frame."""
    return [[t, track_id, x0 + 3 * t, y, 10, 20] for t in frames]


def test_perfect_tracker():
    gt = _walk(1, range(1, 6)) + _walk(2, range(2, 7), x0=50)
    pred = _walk(11, range(1, 6)) + _walk(12, range(2, 7), x0=50)
    got = mot.evaluate_sequences([_sequence(gt, pred)])
    for key in ("mota", "motp", "idf1", "idp", "idr", "hota", "deta", "assa", "loca",
                "precision", "recall"):
        assert got[key] == pytest.approx(1.0, abs=1e-12), key
    assert got["id_switches"] == got["fragmentations"] == 0
    assert got["false_positives"] == got["false_negatives"] == 0
    assert (got["num_gt"], got["num_predictions"], got["mostly_tracked"]) == (10, 10, 2)


def test_one_id_switch():
    # One person over 4 frames; track 1 covers frames 1-2, track 2 frames 3-4.
    gt = _walk(1, range(1, 5))
    pred = _walk(1, range(1, 3)) + _walk(2, range(3, 5))
    got = mot.evaluate_sequences([_sequence(gt, pred)])
    assert got["id_switches"] == 1
    assert got["mota"] == pytest.approx(1 - 1 / 4)
    assert got["idf1"] == pytest.approx(2 * 2 / (4 + 4))  # IDTP 2
    # Every match counts at every alpha (IoU 1); each match's association
    # Jaccard is 2 / (4 + 2 - 2).
    assert got["deta"] == pytest.approx(1.0)
    assert got["assa"] == pytest.approx(0.5)
    assert got["hota"] == pytest.approx(np.sqrt(0.5))


def test_one_false_positive():
    gt = _walk(1, range(1, 5))
    pred = _walk(1, range(1, 5)) + [[2, 9, 500, 500, 10, 10]]
    got = mot.evaluate_sequences([_sequence(gt, pred)])
    assert got["false_positives"] == 1 and got["id_switches"] == 0
    assert got["mota"] == pytest.approx(1 - 1 / 4)
    assert got["precision"] == pytest.approx(4 / 5)
    assert got["idf1"] == pytest.approx(2 * 4 / (4 + 5))
    assert got["deta"] == pytest.approx(4 / 5)
    assert got["assa"] == pytest.approx(1.0)
    assert got["hota"] == pytest.approx(np.sqrt(4 / 5))


def test_remove_ignored():
    # Frame 1: gt 1 is scored, gt 2 ignored. Track 5 sits on gt 2 (removed);
    # track 6 is beside it (IoU 1/3, kept as a false positive).
    gt = [[1, 1, 0, 0, 10, 20], [1, 2, 100, 0, 10, 20]]
    pred = [[1, 4, 0, 0, 10, 20], [1, 5, 100, 0, 10, 20], [1, 6, 105, 0, 10, 20]]
    seq = _sequence(gt, pred, gt_ignore=[False, True])
    kept = mot.remove_ignored(seq)
    assert kept.gt_ignore is None
    np.testing.assert_array_equal(kept.gt_ids, [1])
    np.testing.assert_array_equal(kept.pred_ids, [4, 6])
    np.testing.assert_array_equal(kept.pred_boxes, seq.pred_boxes[[0, 2]])
    got = mot.evaluate_sequences([seq])
    assert (got["num_gt"], got["num_predictions"], got["false_positives"]) == (1, 2, 1)
    assert got["mota"] == pytest.approx(0.0)
    # Without gt_ignore (or all False) nothing is removed.
    assert mot.remove_ignored(dataclasses.replace(seq, gt_ignore=None)).pred_ids.size == 3
    assert mot.remove_ignored(dataclasses.replace(seq, gt_ignore=[0, 0])).pred_ids.size == 3
    # The lower-level functions refuse sequences with ignored boxes.
    with pytest.raises(UserError, match="remove_ignored"):
        mot.clear_mot(seq)


EMPTY = np.zeros((0, 6))


@pytest.mark.parametrize(
    "gt, pred, ignore, want",
    [
        # Nothing at all: TrackEval's conventions (max(1, .) denominators).
        (EMPTY, EMPTY, None, {"mota": 0.0, "hota": 0.0, "loca": 1.0, "idf1": 0.0, "motp": 0.0}),
        (_walk(1, range(1, 4)), EMPTY, None, {"mota": 0.0, "recall": 0.0, "mostly_lost": 1}),
        (EMPTY, _walk(1, range(1, 4)), None, {"mota": -3.0, "precision": 0.0, "idp": 0.0}),
        # Ground truth and predictions in different frames.
        (_walk(1, [1, 2]), _walk(1, [3, 4]), None, {"mota": -1.0, "hota": 0.0, "loca": 1.0}),
        # A sequence of only ignored boxes, with one prediction on them.
        (_walk(1, [1, 2]), _walk(1, [1]), [True, True], {"num_gt": 0, "num_predictions": 0}),
    ],
)
def test_empty_inputs_never_nan(gt, pred, ignore, want):
    got = mot.evaluate_sequences([_sequence(gt, pred, ignore)])
    assert all(np.isfinite(v) for v in got.values()), got
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    per_alpha = mot.hota(mot.remove_ignored(_sequence(gt, pred, ignore)))
    assert all(np.all(np.isfinite(v)) for v in per_alpha.values())


def test_no_sequences():
    got = mot.evaluate_sequences([])
    assert all(np.isfinite(v) for v in got.values())
    assert got["num_sequences"] == 0 and got["hota"] == 0.0


# --- errors -------------------------------------------------------------------------


def test_nan_boxes_raise_user_error_naming_them():
    seq = _sequence(_walk(1, range(1, 4)), _walk(1, range(1, 4)))
    seq.pred_boxes[1, 2] = np.nan
    with pytest.raises(UserError, match=r"pred_boxes .*rows \[1\] \(frames \[2\]\)"):
        mot.evaluate_sequences([seq])
    seq = _sequence(_walk(1, range(1, 4)), _walk(1, range(1, 4)))
    seq.gt_boxes[0, 0] = np.inf
    with pytest.raises(UserError, match=r"gt_boxes .*rows \[0\]"):
        mot.hota(seq)


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"gt_ids": np.array([1, 1, 1]), "gt_frames": np.array([1, 1, 2])},
            "repeats id 1 in frame 1",
        ),
        ({"pred_boxes": np.zeros((3, 5))}, r"pred_boxes must have shape \[N, 4\]"),
        ({"pred_ids": np.array([1, 2])}, "one row per box"),
        ({"gt_frames": np.array([1.0, 2.5, 3.0])}, "whole numbers"),
        ({"gt_ignore": np.array([True, False])}, "gt_ignore must be booleans"),
    ],
)
def test_bad_sequences_raise_user_error(change, match):
    seq = _sequence(_walk(1, range(1, 4)), _walk(1, range(1, 4)))
    with pytest.raises(UserError, match=match):
        mot.evaluate_sequences([dataclasses.replace(seq, **change)])


def test_bad_threshold_raises_user_error():
    with pytest.raises(UserError, match="iou_threshold"):
        mot.evaluate_sequences([], iou_threshold=0.0)
