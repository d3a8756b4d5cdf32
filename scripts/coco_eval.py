"""Scores a COCO results file against a COCO ground-truth file with pycocotools.

  python scripts/coco_eval.py --ground_truth runs/det/eval/ground_truth.json \
      --detections runs/det/eval/detections.json [--iou_type segm]

Prints AP@[.5:.95], AP50, AP75, APs/m/l and AR1/10/100, ARs/m/l as JSON: box
metrics by default, mask metrics with `--iou_type segm` (then every annotation
and detection needs a "segmentation", detections as RLE). `scripts/eval.py`
writes both files for a detection run; detections from elsewhere work too if
they use the same image and category ids.
"""

import json

from absl import flags

from jaxvision import cli, coco

_GROUND_TRUTH = flags.DEFINE_string("ground_truth", None, "COCO instances JSON file.")
_DETECTIONS = flags.DEFINE_string("detections", None, "COCO results JSON file.")
_IOU_TYPE = flags.DEFINE_enum(
    "iou_type", "bbox", coco.IOU_TYPES, "bbox: box IoU (box AP); segm: mask IoU (mask AP)."
)
flags.mark_flags_as_required(["ground_truth", "detections"])


def main(argv):
    del argv  # cli.run refuses stray arguments.
    gt = coco.load_ground_truth(_GROUND_TRUTH.value)
    dets = coco.load_detections(_DETECTIONS.value)
    print(json.dumps(coco.evaluate(gt, dets, iou_type=_IOU_TYPE.value)))


if __name__ == "__main__":
    cli.run(main)
