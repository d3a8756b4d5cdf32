"""Tracks the objects of a frame folder or a video: MOTChallenge results and an annotated video.

  python scripts/track.py --config configs/moving_digits_tracking.py --workdir runs/track \
      --input frames/ --out tracks.txt --video tracks.gif
  python scripts/track.py --config configs/mot17_tracking.py \
      --config.track.association=byte --input MOT17/train/MOT17-04-FRCNN \
      --detections MOT17/train/MOT17-04-FRCNN/det/det.txt --out MOT17-04.txt

--input is a folder of numbered frames, a video file or a MOTChallenge
sequence folder (with seqinfo.ini: its frames are read from img1/, and when
it has gt/gt.txt the tracks are scored against it: MOTA, IDF1, HOTA, ...).
Detections come from the trained model of --workdir, or with --detections
from a MOTChallenge det.txt (public detections: no model, no --workdir;
association "iou" or "byte", as they carry no appearance). A frame that is
missing or cannot be read is skipped with a warning while the tracker's
motion model runs on through it. --out gets `frame,id,x,y,w,h,score,-1,-1,-1`
lines; --video (.mp4 or .gif) the frames with each track's box, id and trail.
"""

import collections
import os

from absl import flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from jaxvision import cli, experiment, visualize
from jaxvision.data import mot_files
from jaxvision.errors import UserError
from jaxvision.tasks import tracking

_CONFIG = config_flags.DEFINE_config_file("config", help_string="Config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's workdir (not with --detections).")
_INPUT = flags.DEFINE_string("input", None, "A frame folder, a video or a MOTChallenge sequence folder.")
_OUT = flags.DEFINE_string("out", None, "MOTChallenge results file to write.")
_VIDEO = flags.DEFINE_string("video", None, "Also write the tracks drawn on the frames (.mp4, .gif).")
_DETECTIONS = flags.DEFINE_string("detections", None, "Track these det.txt detections, no model.")
_TRAIL = flags.DEFINE_integer("trail", 15, "Frames of trail drawn behind each track.")
_FPS = flags.DEFINE_float("fps", None, "Frame rate of --video (default: seqinfo.ini's, else 10).")
flags.mark_flags_as_required(["config", "input", "out"])


def main(argv):
    del argv  # cli.run refuses stray arguments.
    config = _CONFIG.value
    if config.task != "tracking":
        raise UserError(f"track.py runs tracking configs, not config.task {config.task!r}.")
    sequence = _INPUT.value if os.path.isfile(os.path.join(_INPUT.value, "seqinfo.ini")) else None
    info = mot_files.read_seqinfo(sequence) if sequence else None
    if _DETECTIONS.value:
        detections = mot_files.read_detections(_DETECTIONS.value)
        tracker = tracking.VideoTracker(config)
    elif _WORKDIR.value:
        exp, variables, step = experiment.restore(config, _WORKDIR.value)
        logging.info("Tracking with the model of checkpoint step %d.", step)
        tracker = tracking.VideoTracker(config, exp, variables)
    else:
        raise UserError("Pass --workdir (a trained model) or --detections (a det.txt file).")

    frames = mot_files.read_frames(os.path.join(sequence, info.im_dir) if sequence else _INPUT.value)
    results, drawn = [], []
    trails = collections.defaultdict(lambda: collections.deque(maxlen=_TRAIL.value))
    for number, image, _ in tqdm(frames, desc="tracking", unit="frame"):
        if image is None:
            frame_dets = tracker.no_detections()
        elif _DETECTIONS.value:
            rows = detections.frames == number
            frame_dets = tracker.public_detections(detections.boxes[rows], detections.scores[rows])
        else:
            frame_dets = tracker.detect(image)
        tracks = tracker.step(frame_dets)
        results.append((number, tracks))
        for track_id, box in zip(tracks["ids"], tracks["boxes"], strict=True):
            trails[int(track_id)].append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        if _VIDEO.value and image is not None:
            upscale = max(1, 384 // max(image.shape[:2]))  # Tags readable on small frames.
            drawn.append(visualize.draw_tracks(image, tracks["boxes"], tracks["ids"], trails,
                                               upscale=upscale))
    tracked = tracking.concatenate_tracks(results)
    mot_files.write_mot_results(_OUT.value, *tracked)
    logging.info("Wrote %d boxes of %d tracks in %d frames to %s.", len(tracked[0]),
                 len(set(tracked[1].tolist())), len(results), _OUT.value)
    if _VIDEO.value:
        visualize.write_video(_VIDEO.value, drawn, _FPS.value or (info.frame_rate if info else 10))
        logging.info("Wrote %s.", _VIDEO.value)
    if sequence and os.path.isfile(os.path.join(sequence, "gt", "gt.txt")):
        metrics = tracking.score_sequence(sequence, *tracked[:3], config.eval_min_visibility)
        print("\n".join(f"{name}\t{value:.4f}" for name, value in metrics.items()))


if __name__ == "__main__":
    cli.run(main)
