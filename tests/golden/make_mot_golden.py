"""Writes tests/golden/mot_golden.json: motmetrics' and TrackEval's tracking metrics.

Run once by hand; neither reference is a jaxvision dependency:

    pip install motmetrics==1.4.0 trackeval==1.3.0
    python tests/golden/make_mot_golden.py

Generated with motmetrics 1.4.0, trackeval 1.3.0, numpy 2.4.6, scipy 1.17.1,
pandas 3.1.1 (the versions are also written into the JSON).
`tests/metrics/test_mot.py` compares `jaxvision/metrics/mot.py` with it.

Sequences:
- TUD-Campus and TUD-Stadtmitte: `tests/golden/mot/*/{gt,test}.txt`, copies of
  motmetrics' own test data (see the README there). motmetrics is run the way
  its `test_motchallenge_files` runs it (`mm.io.loadtxt`,
  `compare_to_groundtruth(..., 'iou', distth=0.5)`, `compute_many` with the
  "OVERALL" row); it documents TUD-Campus IDF1 0.5577 and MOTA 0.5265, which
  are checked below. TrackEval's HOTA, CLEAR and Identity get the per-sequence
  `data` dict its MOTChallenge loader would build (ids relabelled 0..n-1,
  IoU from its `_calculate_box_ious`), from the same boxes: like
  `mm.io.loadtxt`, x and y are shifted by -1 so both see the same floats.
- Hand cases (`hand_cases` in the JSON, rows `frame, id, x, y, w, h`):
  `swap_and_miss` (two crossing people whose tracks swap, a missed frame, a
  ground truth absent for a frame, a false positive, people tracked in
  exactly 80% and 20% of their frames), `carry_over` (motmetrics keeps a
  correspondence across a missed or unannotated frame where TrackEval's CLEAR,
  which only looks one frame back, switches), `ties` (identical boxes: the row order
  breaks the ties), `ignore` and `only_ignored` (distractor ground truth,
  class 8, with the predictions on it: run through TrackEval's whole
  `MotChallenge2DBox` loader and preprocessing from files, and motmetrics on
  the preprocessed boxes), `no_predictions` and `no_gt` (TrackEval only:
  motmetrics' ratios are NaN there).
"""

import importlib.metadata
import json
import os
import tempfile

import numpy as np

# motmetrics 1.4.0 calls np.asfarray (distances.iou_matrix), removed in NumPy 2.0.
if not hasattr(np, "asfarray"):
    np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)

import motmetrics as mm
import pandas as pd
import scipy
import trackeval  # (1.3.0 imports and runs with NumPy 2.x as is)
from trackeval.datasets._base_dataset import _BaseDataset

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "mot")
OUT = os.path.join(HERE, "mot_golden.json")
TUD = ["TUD-Campus", "TUD-Stadtmitte"]

MM_KEYS = [
    "mota", "motp", "idf1", "idp", "idr", "num_switches", "num_fragmentations",
    "num_false_positives", "num_misses", "mostly_tracked", "partially_tracked",
    "mostly_lost", "precision", "recall", "num_objects", "num_predictions",
    "num_detections", "idtp", "idfp", "idfn",
]
HOTA_KEYS = ["HOTA", "DetA", "AssA", "LocA", "HOTA_TP", "HOTA_FN", "HOTA_FP"]
CLEAR_KEYS = ["MOTA", "MOTP", "CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "Frag", "MT", "PT", "ML"]
IDENTITY_KEYS = ["IDF1", "IDP", "IDR", "IDTP", "IDFP", "IDFN"]


def _plain(x):
    """numpy scalars/arrays -> JSON-able Python values."""
    x = np.asarray(x)
    if x.ndim:
        return [_plain(v) for v in x]
    if np.issubdtype(x.dtype, np.integer):
        return int(x)
    return float(x)


def _load_tud(name, which):
    """`[N, 6]` rows frame, id, x, y, w, h of a TUD file, x/y shifted like mm.io.loadtxt."""
    rows = np.loadtxt(os.path.join(DATA, name, f"{which}.txt"), delimiter=",")[:, :6]
    rows[:, 2:4] -= 1
    return rows


# --- motmetrics ---------------------------------------------------------------------


def _mm_summary(accs, names, overall):
    mh = mm.metrics.create()
    metrics = list(mm.metrics.motchallenge_metrics) + [
        "num_objects", "num_predictions", "num_detections", "idtp", "idfp", "idfn"
    ]
    summary = mh.compute_many(accs, metrics=metrics, names=names, generate_overall=overall)
    out = {}
    for name in summary.index:
        row = summary.loc[name]
        out[name] = {k: _plain(row[k]) for k in MM_KEYS}
    return out


def _mm_acc(frames):
    """An accumulator fed like compare_to_groundtruth: `frames` is a list of
    (frame, oids, oboxes_xywh, hids, hboxes_xywh) in frame order."""
    acc = mm.MOTAccumulator()
    for fid, oids, oboxes, hids, hboxes in frames:
        if len(oids) == 0 and len(hids) == 0:
            continue  # compare_to_groundtruth only visits frames present on a side.
        dists = np.empty((0, 0))
        if len(oids) and len(hids):
            dists = mm.distances.iou_matrix(oboxes, hboxes, max_iou=0.5)
        acc.update(oids, hids, dists, frameid=fid)
    return acc


def _split_frames(gt, pred, num_frames):
    """Rows -> per-frame (frame, gt ids, gt xywh, pred ids, pred xywh), file order kept."""
    frames = []
    for t in range(1, num_frames + 1):
        g, p = gt[gt[:, 0] == t], pred[pred[:, 0] == t]
        frames.append((t, g[:, 1].astype(int), g[:, 2:6], p[:, 1].astype(int), p[:, 2:6]))
    return frames


# --- TrackEval ----------------------------------------------------------------------


def _te_data(frames):
    """TrackEval's preprocessed `data` dict from per-frame rows (no ignored boxes)."""
    gt_u = np.unique(np.concatenate([f[1] for f in frames]).astype(int))
    tr_u = np.unique(np.concatenate([f[3] for f in frames]).astype(int))
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for _, oids, oboxes, hids, hboxes in frames:
        data["gt_ids"].append(np.searchsorted(gt_u, oids).astype(int))
        data["tracker_ids"].append(np.searchsorted(tr_u, hids).astype(int))
        data["similarity_scores"].append(
            _BaseDataset._calculate_box_ious(
                np.asarray(oboxes, float).reshape(-1, 4),
                np.asarray(hboxes, float).reshape(-1, 4),
                box_format="xywh",
            )
        )
    data["num_gt_dets"] = int(sum(len(x) for x in data["gt_ids"]))
    data["num_tracker_dets"] = int(sum(len(x) for x in data["tracker_ids"]))
    data["num_gt_ids"] = len(gt_u)
    data["num_tracker_ids"] = len(tr_u)
    data["num_timesteps"] = len(frames)
    data["seq"] = "seq"
    return data


def _te_eval(data):
    metrics = {
        "hota": (trackeval.metrics.HOTA(), HOTA_KEYS),
        "clear": (trackeval.metrics.CLEAR({"PRINT_CONFIG": False}), CLEAR_KEYS),
        "identity": (trackeval.metrics.Identity({"PRINT_CONFIG": False}), IDENTITY_KEYS),
    }
    return {name: metric.eval_sequence(data) for name, (metric, _) in metrics.items()}, metrics


def _te_plain(res, metrics):
    return {name: {k: _plain(res[name][k]) for k in keys} for name, (_, keys) in metrics.items()}


def _te_from_files(name, gt_rows, pred_rows, num_frames):
    """TrackEval's MOTChallenge loader and preprocessing on MOT17-format files.

    `gt_rows`: frame, id, x, y, w, h, class (1 pedestrian, 8 distractor).
    Returns the preprocessed `data` dict.
    """
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir = os.path.join(tmp, "gt", name, "gt")
        tr_dir = os.path.join(tmp, "trackers", "hand", "data")
        os.makedirs(gt_dir)
        os.makedirs(tr_dir)
        with open(os.path.join(gt_dir, "gt.txt"), "w") as f:
            for r in gt_rows:  # zero_marked 1, visibility 1.
                box = ",".join(repr(float(v)) for v in r[2:6])
                f.write(f"{int(r[0])},{int(r[1])},{box},1,{int(r[6])},1\n")
        with open(os.path.join(tr_dir, f"{name}.txt"), "w") as f:
            for r in pred_rows:
                box = ",".join(repr(float(v)) for v in r[2:6])
                f.write(f"{int(r[0])},{int(r[1])},{box},1\n")
        config = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
        config.update(
            GT_FOLDER=os.path.join(tmp, "gt"),
            TRACKERS_FOLDER=os.path.join(tmp, "trackers"),
            TRACKERS_TO_EVAL=["hand"],
            SEQ_INFO={name: num_frames},
            SKIP_SPLIT_FOL=True,
            PRINT_CONFIG=False,
        )
        dataset = trackeval.datasets.MotChallenge2DBox(config)
        raw = dataset.get_raw_seq_data("hand", name)
        return dataset.get_preprocessed_seq_data(raw, "pedestrian")


# --- hand cases ---------------------------------------------------------------------


def _hand_cases():
    """{name: (gt rows [frame, id, x, y, w, h, class], pred rows [frame, id, x, y, w, h])}."""
    cases = {}

    gt, pred = [], []
    for t in range(1, 7):
        x1, x2 = 10 + 10 * t, 100 - 10 * t  # People 1 and 2 cross between frames 4 and 5.
        gt += [[t, 1, x1, 10, 20, 40, 1], [t, 2, x2, 12, 20, 40, 1]]
        if t != 5:  # Person 3 is not annotated in frame 5.
            gt.append([t, 3, 200, 50, 30, 60, 1])
        a, b = (x1, x2) if t <= 4 else (x2, x1)  # Tracks 7 and 8 swap people at frame 5.
        pred += [[t, 7, a + 1, 10.5, 20, 40], [t, 8, b + 1, 12, 20, 41]]
        if t != 3:  # Track 9 misses person 3 in frame 3 (and is a false positive in 5).
            pred.append([t, 9, 200, 52, 30, 60])
        if t == 2:
            pred.append([t, 5, 300, 300, 20, 20])
        if t <= 5:  # Person 4 is tracked in 1 of 5 frames: 20%, partially tracked.
            gt.append([t, 4, 300, 200, 20, 40, 1])
        if t == 1:
            pred.append([t, 10, 301, 200, 20, 40])
    cases["swap_and_miss"] = (gt, pred)

    # Person 1 is missed in frame 2 (track 3 is a false positive elsewhere; with
    # no prediction at all TrackEval's CLEAR would skip the frame); persons 2
    # and 3 are not annotated in frame 2. Frame 3: tracks 1 and 5 still
    # overlap their people (IoU 0.6) where tracks 2 and 6 would fit better
    # (IoU 1); person 3 comes back with a new track (8).
    gt = [
        [1, 1, 0, 0, 10, 10, 1], [1, 2, 50, 0, 10, 10, 1], [1, 3, 100, 0, 10, 10, 1],
        [2, 1, 0, 0, 10, 10, 1],
        [3, 1, 0, 0, 10, 10, 1], [3, 2, 50, 0, 10, 10, 1], [3, 3, 100, 0, 10, 10, 1],
    ]
    pred = [
        [1, 1, 0, 0, 10, 10], [1, 5, 50, 0, 10, 10], [1, 7, 100, 0, 10, 10],
        [2, 3, 100, 100, 10, 10],
        [3, 1, 2.5, 0, 10, 10], [3, 2, 0, 0, 10, 10], [3, 5, 52.5, 0, 10, 10],
        [3, 6, 50, 0, 10, 10], [3, 8, 100, 0, 10, 10],
    ]
    cases["carry_over"] = (gt, pred)

    # Identical boxes in frames 1-2; in frame 3 each track sits on the other person.
    gt = [
        [1, 2, 0, 0, 10, 10, 1], [1, 1, 0, 0, 10, 10, 1],
        [2, 1, 0, 0, 10, 10, 1], [2, 2, 0, 0, 10, 10, 1],
        [3, 1, 0, 0, 10, 10, 1], [3, 2, 20, 0, 10, 10, 1],
    ]
    pred = [
        [1, 6, 0, 0, 10, 10], [1, 5, 0, 0, 10, 10],
        [2, 5, 0, 0, 10, 10], [2, 6, 0, 0, 10, 10],
        [3, 5, 20, 0, 10, 10], [3, 6, 0, 0, 10, 10],
    ]
    cases["ties"] = (gt, pred)

    # Person 1 walks; box 2 is a distractor (class 8). Track 4 sits on the
    # distractor (frame 1: removed) or beside it (frame 2, IoU 1/3: kept, a
    # false positive). Frame 4: track 3 overlaps person 1 (IoU 0.82) and the
    # distractor (IoU 0.67); matched against all boxes it takes person 1 and
    # is kept. Frame 5: track 4 overlaps both boxes with IoU 0.6 and the
    # Hungarian gives it the distractor (removed).
    gt = [
        [1, 1, 0, 0, 20, 40, 1], [1, 2, 50, 0, 20, 40, 8],
        [2, 1, 2, 0, 20, 40, 1], [2, 2, 50, 0, 20, 40, 8],
        [3, 1, 4, 0, 20, 40, 1], [3, 2, 50, 0, 20, 40, 8],
        [4, 1, 6, 0, 20, 40, 1], [4, 2, 12, 0, 20, 40, 8],
        [5, 1, 8, 0, 20, 40, 1], [5, 2, 18, 0, 20, 40, 8],
    ]
    pred = [
        [1, 3, 0, 0, 20, 40], [1, 4, 51, 0, 20, 40],
        [2, 3, 2, 0, 20, 40], [2, 4, 60, 0, 20, 40],
        [3, 3, 4, 0, 20, 40], [3, 5, 200, 0, 20, 20],
        [4, 3, 8, 0, 20, 40],
        [5, 3, 9, 0, 20, 40], [5, 4, 13, 0, 20, 40],
    ]
    cases["ignore"] = (gt, pred)

    # Only distractors: the prediction on one is removed, the other stays (a false positive).
    gt = [[1, 1, 0, 0, 20, 40, 8], [2, 1, 0, 0, 20, 40, 8]]
    pred = [[1, 3, 1, 0, 20, 40], [2, 4, 100, 0, 20, 40]]
    cases["only_ignored"] = (gt, pred)

    swap_gt, swap_pred = cases["swap_and_miss"]
    cases["no_predictions"] = (swap_gt, [])
    cases["no_gt"] = ([], swap_pred)
    return cases


def main():
    out = {
        "versions": {
            "motmetrics": mm.__version__,
            "trackeval": importlib.metadata.version("trackeval"),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
        },
        "hota_alphas": _plain(trackeval.metrics.HOTA().array_labels),
        "motmetrics": {},
        "trackeval": {},
        "hand_cases": {},
    }

    # TUD sequences.
    accs = []
    for name in TUD:
        gt_df = mm.io.loadtxt(os.path.join(DATA, name, "gt.txt"))
        dt_df = mm.io.loadtxt(os.path.join(DATA, name, "test.txt"))
        accs.append(mm.utils.compare_to_groundtruth(gt_df, dt_df, "iou", distth=0.5))
    out["motmetrics"].update(_mm_summary(accs, TUD, overall=True))
    campus = out["motmetrics"]["TUD-Campus"]
    assert round(campus["idf1"], 4) == 0.5577 and round(campus["mota"], 4) == 0.5265, campus

    all_res = {}
    for name in TUD:
        gt, pred = _load_tud(name, "gt"), _load_tud(name, "test")
        num_frames = int(max(gt[:, 0].max(), pred[:, 0].max()))
        res, metrics = _te_eval(_te_data(_split_frames(gt, pred, num_frames)))
        all_res[name] = res
        out["trackeval"][name] = _te_plain(res, metrics)
    combined = {
        name: metric.combine_sequences({seq: all_res[seq][name] for seq in TUD})
        for name, (metric, _) in metrics.items()
    }
    out["trackeval"]["COMBINED"] = _te_plain(combined, metrics)

    # Hand cases.
    for name, (gt, pred) in _hand_cases().items():
        gt = np.asarray(gt, float).reshape(-1, 7)
        pred = np.asarray(pred, float).reshape(-1, 6)
        num_frames = int(max(gt[:, 0].max(initial=0), pred[:, 0].max(initial=0)))
        out["hand_cases"][name] = {
            "gt": _plain(gt[:, :6]),
            "gt_ignore": _plain(gt[:, 6] == 8),
            "pred": _plain(pred),
        }
        if name in ("ignore", "only_ignored"):
            data = _te_from_files(name, gt, pred, num_frames)
            frames = [
                (t + 1, data["gt_ids"][t], data["gt_dets"][t], data["tracker_ids"][t],
                 data["tracker_dets"][t])
                for t in range(num_frames)
            ]
        else:
            assert np.all(gt[:, 6] == 1)
            frames = _split_frames(gt, pred, num_frames)
            data = _te_data(frames)
        res, metrics = _te_eval(data)
        # What TrackEval reports for a benchmark of this one sequence (its
        # COMBINED_SEQ row): for an empty side, eval_sequence leaves MOTA at 0
        # but the combined row recomputes it from the counts.
        res = {n: metric.combine_sequences({name: res[n]}) for n, (metric, _) in metrics.items()}
        out["trackeval"][name] = _te_plain(res, metrics)
        if len(gt) and len(pred) and data["num_gt_dets"]:
            out["motmetrics"].update(_mm_summary([_mm_acc(frames)], [name], overall=False))

    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    for name in TUD + ["OVERALL"]:
        r = out["motmetrics"][name]
        print(f"motmetrics {name}: MOTA {r['mota']:.4f} IDF1 {r['idf1']:.4f}")
    for name in TUD + ["COMBINED"]:
        print(f"TrackEval {name}: HOTA {np.mean(out['trackeval'][name]['hota']['HOTA']):.4f}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
