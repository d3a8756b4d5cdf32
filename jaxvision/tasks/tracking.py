"""Multi-object tracking: detect and embed every frame, link the detections into tracks.

Implements the `jaxvision.tasks.Task` protocol for tracking by detection.
Training is detection training (`detection.loss_fn`) of a detector that also
embeds each detection, the JDE model (`models/jde.py`): the batch's
"identities" train its appearance embedding. Frames are shuffled like any
detection images; the order of frames matters only at evaluation.

Evaluation detects and embeds every frame of the eval split in batches
(`eval_outputs`, jitted, data-parallel), then, on the host, runs the tracker
(`jaxvision.tracking`, one jitted `lax.scan` per sequence, settings
`config.track`) over each sequence's frames in order and scores the tracks
against the ground truth (`metrics.mot`):

  mota, motp, id_switches, fragmentations, false_positives, false_negatives
                       CLEAR-MOT (motmetrics' definitions; motp is the mean IoU)
  idf1, idp, idr       identity metrics (Ristani et al.)
  hota, deta, assa     HOTA (TrackEval's definition) and its detection and
                       association parts

Ground-truth boxes less than `config.eval_min_visibility` visible (mostly or
fully occluded) and ignore regions (crowd boxes: MOT17's distractor classes)
are ignored, as TrackEval ignores MOTChallenge's distractors: a track on one
is neither a hit nor a false positive. With an export dir
(`scripts/eval.py`), each sequence's tracks are written in MOTChallenge format
to `tracks/<sequence>.txt` there.

`VideoTracker` serves `scripts/track.py`: it tracks any frame folder or
video, one frame at a time, with detections from the model or from a
MOTChallenge `det.txt`.

Batches (from `data.TrackingDecode`) hold `detection`'s keys and
"track_ids" int32 [B, M] (0: padding), "identities" int32 [B, M] (-1:
padding or unknown), "visibility" float32 [B, M], "sequence" and "frame"
int32 [B].
"""

import collections
import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from jaxvision import data, tracking, visualize
from jaxvision.data import mot_files
from jaxvision.errors import UserError
from jaxvision.metrics import mot
from jaxvision.tasks import detection

# The tracker runs over sequences padded to a multiple of this many frames:
# one compiled scan serves all sequences of similar length.
_FRAME_BUCKET = 64


def make_decode(config: ml_collections.ConfigDict) -> data.Decode:
    """`TrackingDecode` at the config's canvas size, checking identities against the model's."""
    cfg = config.data
    return data.TrackingDecode(cfg.image_size, cfg.max_boxes, config.model.num_identities)


# A frame is one detection canvas, and training is the JDE detector's loss.
input_shape = detection.input_shape
loss_fn = detection.loss_fn


def synthetic_batch(
    config: ml_collections.ConfigDict, info: data.DatasetInfo, batch_size: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """`detection.synthetic_batch`'s canvases and boxes, as frames of one sequence.

    Each box gets a track id, a random identity below
    `config.model.num_identities` and full visibility; frame i is frame i + 1.
    """
    batch = detection.synthetic_batch(config, info, batch_size, rng)
    box_mask = batch["box_mask"]  # [B, M]
    slots = np.arange(1, box_mask.shape[1] + 1)  # [M]
    identities = rng.integers(0, config.model.num_identities, box_mask.shape)  # [B, M]
    batch.update({
        "track_ids": np.where(box_mask, slots, 0).astype(np.int32),
        "identities": np.where(box_mask, identities, -1).astype(np.int32),
        "visibility": box_mask.astype(np.float32),
        "sequence": np.zeros((batch_size,), np.int32),
        "frame": np.arange(1, batch_size + 1, dtype=np.int32),
    })
    return batch


def tracker_config(config: ml_collections.ConfigDict) -> tracking.TrackerConfig:
    """`config.track` as the tracker's settings.

    Raises:
      UserError: a key that is not a `tracking.TrackerConfig` field, or a bad value.
    """
    try:
        return tracking.TrackerConfig(**config.track.to_dict())
    except TypeError as e:
        raise UserError(
            f"config.track has a key the tracker does not know ({e}); its keys are the "
            "fields of jaxvision.tracking.TrackerConfig."
        ) from e


def eval_outputs(
    variables: dict[str, Any], batch: dict[str, jax.Array], *,
    model: Any, config: ml_collections.ConfigDict,
) -> dict[str, jax.Array]:
    """The batch's detections with their embeddings, and the ground truth the host scores."""
    detections = detection.predict(variables, batch["image"], model=model, config=config)
    keys = ["boxes", "box_mask", "crowd", "track_ids", "visibility", "sequence", "frame",
            "scale", "mask"]
    return {"detections": detections, "ground_truth": {key: batch[key] for key in keys}}


class Evaluator:
    """Collects every eval frame's detections and ground truth; tracks each sequence; MOT metrics."""

    def __init__(self, config: ml_collections.ConfigDict, info: data.DatasetInfo, split: str):
        del info
        self._tracker = tracker_config(config)
        self._min_visibility = config.eval_min_visibility
        self._names = [s.name for s in data.sequence_metadata(
            config.data.name, split, config.data.data_dir)]
        # sequence -> frame -> (detections, ground truth), NumPy, original pixels.
        self._frames: dict[int, dict[int, tuple[dict, dict]]] = collections.defaultdict(dict)

    def add(self, outputs: dict[str, Any]) -> None:
        """Adds one batch's `eval_outputs` (fetched to the host)."""
        gt, dets = outputs["ground_truth"], outputs["detections"]
        for i in np.flatnonzero(gt["mask"]):
            scale = gt["scale"][i]
            real = gt["box_mask"][i]  # [M]
            frame_dets = {key: dets[key][i] for key in ("scores", "embeddings", "valid")}
            frame_dets["boxes"] = detection.to_original_pixels(dets["boxes"][i], scale)  # [D, 4]
            frame_gt = {
                "boxes": detection.to_original_pixels(gt["boxes"][i][real], scale),  # [G, 4]
                "ids": gt["track_ids"][i][real],  # [G]
                "visibility": gt["visibility"][i][real],  # [G]
                "crowd": gt["crowd"][i][real],  # [G] ignore regions (MOT17's distractors)
            }
            self._frames[int(gt["sequence"][i])][int(gt["frame"][i])] = (frame_dets, frame_gt)

    def result(self, export_dir: str | None = None) -> dict[str, float]:
        """MOT metrics over every sequence (module docstring); with `export_dir`, the tracks."""
        sequences = []
        for sequence in sorted(self._frames):
            frames = self._frames[sequence]
            numbers = np.arange(min(frames), max(frames) + 1)  # A half split starts mid-way.
            missing = len(numbers) - len(frames)
            if missing:
                logging.warning(
                    "Sequence %s: %d of its %d frames were not evaluated; the tracker "
                    "sees them as frames without detections.", self._name(sequence),
                    missing, len(numbers),
                )
            empty = _no_detections(next(iter(frames.values()))[0])
            per_frame = [frames.get(n, (empty, None))[0] for n in numbers]
            tracks = track_frames(per_frame, self._tracker, first_frame=int(numbers[0]))
            gt_rows = [(n, frames[n][1]) for n in numbers if n in frames]
            sequences.append(_sequence_data(tracks, gt_rows, self._min_visibility))
            if export_dir is not None and jax.process_index() == 0:
                path = os.path.join(export_dir, "tracks", f"{self._name(sequence)}.txt")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                mot_files.write_mot_results(
                    path, tracks["frames"], tracks["ids"], tracks["boxes"], tracks["scores"]
                )
        return mot.evaluate_sequences(sequences)

    def _name(self, sequence: int) -> str:
        return self._names[sequence] if sequence < len(self._names) else f"{sequence:04d}"


def _no_detections(like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A frame's detections with every slot empty, shaped like `like`."""
    return {key: np.zeros_like(value) for key, value in like.items()}


def track_frames(
    frames: list[dict[str, np.ndarray]], config: tracking.TrackerConfig, first_frame: int = 1
) -> dict[str, np.ndarray]:
    """Runs the tracker over one sequence's per-frame detections, in order.

    Args:
      frames: per frame, "boxes" [D, 4] xyxy, "scores" [D], "embeddings" [D, E]
        and "valid" [D] (every frame shaped alike).
      config: the tracker's settings.
      first_frame: the number of `frames[0]` (MOTChallenge numbers frames from 1).

    Returns:
      The confirmed tracks matched in each frame, flattened over frames:
      "frames" [P] (numbered from `first_frame`), "ids" [P], "boxes" [P, 4] xyxy, "scores" [P].
    """
    num = len(frames)
    padded = -(-num // _FRAME_BUCKET) * _FRAME_BUCKET
    frames = frames + [_no_detections(frames[0])] * (padded - num)
    stacked = {key: np.stack([f[key] for f in frames]) for key in frames[0]}  # [F', D, ...]
    outputs = jax.device_get(tracking.track_sequence(stacked, config))  # [F', T, ...] (jitted)
    valid = outputs["valid"][:num]  # [F, T]
    frame_numbers = np.broadcast_to(np.arange(first_frame, first_frame + num)[:, None], valid.shape)
    return {
        "frames": frame_numbers[valid],
        "ids": outputs["ids"][:num][valid],
        "boxes": outputs["boxes"][:num][valid],
        "scores": outputs["scores"][:num][valid],
    }


def _sequence_data(
    tracks: dict[str, np.ndarray], gt_rows: list[tuple[int, dict]], min_visibility: float
) -> mot.SequenceData:
    """`metrics.mot`'s view of one tracked sequence and its (frame, ground truth) rows."""
    gt = [g for _, g in gt_rows]
    visibility = np.concatenate([g["visibility"] for g in gt])  # [G]
    crowd = np.concatenate([g["crowd"] for g in gt])  # [G]
    return mot.SequenceData(
        gt_frames=np.concatenate([np.full(len(g["ids"]), n) for n, g in gt_rows]),
        gt_ids=np.concatenate([g["ids"] for g in gt]),
        gt_boxes=np.concatenate([g["boxes"] for g in gt]).reshape(-1, 4),
        pred_frames=tracks["frames"], pred_ids=tracks["ids"], pred_boxes=tracks["boxes"],
        gt_ignore=crowd | (visibility < min_visibility),
    )


class VideoTracker:
    """The tracker applied to a stream of frames, one at a time (`scripts/track.py`).

    Detections come from a trained JDE model (`detect`: each frame is
    letterboxed as the datasets are, `data.letterbox`) or from elsewhere,
    such as a MOTChallenge `det.txt` (`public_detections`); `step` feeds one
    frame's detections to the jitted `tracking.update`. Both keep one
    compiled shape: `config.detect.max_detections` slots per frame.
    """

    def __init__(
        self, config: ml_collections.ConfigDict, exp: Any = None,
        variables: dict[str, Any] | None = None,
    ):
        """`exp` and `variables`: the trained `experiment.Experiment` and its variables (None: no detector).

        Raises:
          UserError: appearance association without a detector (public
            detections carry no embeddings).
        """
        self._config = tracker_config(config)
        self._slots = config.detect.max_detections
        self._size = config.data.image_size
        self._dim = config.model.embedding_dim if exp is not None else 1
        if exp is None and self._config.association == "appearance":
            raise UserError(
                "Public detections carry no appearance embeddings; track them with "
                "--config.track.association=byte (or iou), or pass a trained --workdir."
            )
        self._variables = variables
        if exp is not None:
            self._channels = exp.input_shape[-1]
            self._predict = jax.jit(functools.partial(detection.predict, model=exp.model, config=config))
        self._state = tracking.init_state(self._config, self._dim)

    def detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The model's detections of one uint8 RGB frame [H, W, 3], in its pixels.

        A model trained on grey frames gets the frame's luma (PIL's "L"), as
        `visualize.load_image` reads grey datasets' images.
        """
        if self._channels == 1:
            image = np.asarray(Image.fromarray(visualize.to_rgb(image)).convert("L"))[..., None]
        canvas, scale = data.letterbox(image, self._size)  # [S, S, C], [2]
        dets = jax.device_get(self._predict(self._variables, canvas[None]))  # Batch of 1.
        dets = {key: value[0] for key, value in dets.items() if key != "labels"}
        dets["boxes"] = detection.to_original_pixels(dets["boxes"], scale)  # [D, 4]
        return dets

    def public_detections(self, boxes: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
        """Given detections, boxes [K, 4] xyxy and scores [K], in `detect`'s padded form (best K kept)."""
        order = np.argsort(-scores, kind="stable")[: self._slots]  # [k]
        dets = self.no_detections()
        dets["boxes"][: len(order)] = boxes[order]
        dets["scores"][: len(order)] = scores[order]
        dets["valid"][: len(order)] = True
        return dets

    def no_detections(self) -> dict[str, np.ndarray]:
        """A frame without detections (a frame that could not be read keeps the motion going)."""
        return {
            "boxes": np.zeros((self._slots, 4), np.float32),
            "scores": np.zeros((self._slots,), np.float32),
            "embeddings": np.zeros((self._slots, self._dim), np.float32),
            "valid": np.zeros((self._slots,), bool),
        }

    def step(self, detections: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One frame: the confirmed tracks matched in it, "ids" [n], "boxes" [n, 4], "scores" [n]."""
        self._state, out = tracking.update(self._state, detections, config=self._config)  # Jitted.
        out = jax.device_get(out)
        valid = out["valid"]
        return {"ids": out["ids"][valid], "boxes": out["boxes"][valid], "scores": out["scores"][valid]}


def concatenate_tracks(
    results: list[tuple[int, dict[str, np.ndarray]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`VideoTracker.step`'s outputs of numbered frames -> rows (frames [P], ids [P], boxes [P, 4], scores [P])."""
    frames = [np.full(len(tracks["ids"]), number) for number, tracks in results]
    return (
        np.concatenate([np.zeros(0, np.int64), *frames]).astype(np.int64),
        np.concatenate([np.zeros(0, np.int64), *(t["ids"] for _, t in results)]),
        np.concatenate([np.zeros((0, 4), np.float32), *(t["boxes"] for _, t in results)]),
        np.concatenate([np.zeros(0, np.float32), *(t["scores"] for _, t in results)]),
    )


def score_sequence(
    sequence_dir: str, frames: np.ndarray, ids: np.ndarray, boxes: np.ndarray,
    min_visibility: float,
) -> dict[str, float]:
    """MOT metrics of tracks (rows as `concatenate_tracks`'s) on a MOTChallenge sequence's gt.txt.

    The targets and ignore regions are TrackEval's (`mot_files.ground_truth_roles`);
    targets less visible than `min_visibility` are ignored too.
    """
    gt = mot_files.read_ground_truth(os.path.join(sequence_dir, "gt", "gt.txt"))
    target, ignore = mot_files.ground_truth_roles(gt, os.path.basename(sequence_dir.rstrip("/")))
    scored = target | ignore  # [N]
    ignore = ignore | (gt.visibility < min_visibility)
    return mot.evaluate_sequences([mot.SequenceData(
        gt_frames=gt.frames[scored], gt_ids=gt.ids[scored], gt_boxes=gt.boxes[scored],
        pred_frames=frames, pred_ids=ids, pred_boxes=boxes, gt_ignore=ignore[scored],
    )])
