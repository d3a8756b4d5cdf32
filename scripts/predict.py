"""Runs a trained model on image files: a detector draws its boxes, a recognizer matches.

  python scripts/predict.py --config configs/digit_detection_fcos.py \
      --workdir runs/digit_detection_fcos --image in.png --out out.png
  python scripts/predict.py ... --image photos/ --out photos_boxes/ --json dets.json
  python scripts/predict.py --config configs/digit_instances_arcface.py \
      --workdir runs/arcface --gallery people/ --image query.png   # or a folder of queries
  python scripts/predict.py --config ... --workdir ... --pairs pairs.txt

Recognition (`config.task` "recognition"): `--gallery` is an identity folder
(one sub-folder of images per identity); each `--image` query gets the
identity whose template (mean embedding) is most similar, printed with the
cosine similarity. `--pairs` is a text file of `IMAGE_A IMAGE_B [SAME]`
lines (paths relative to it); each pair's cosine similarity is printed with
the decision at `--threshold` (default: the run's last logged
`verification_threshold`), and the accuracy where SAME is given.

Detection:
Each image goes through the same host resize as the dataset (`data.letterbox`:
longer side to config.data.image_size), the detector and its post-processing; boxes are drawn
on the original image with class names and scores, and a Mask R-CNN's masks as
translucent fills in the box colour. `--json` writes every detection (score >=
config.detect.score_threshold) in COCO results format, in original pixels (with
a "segmentation" RLE per detection for Mask R-CNN), with image ids numbering the inputs (a folder's in sorted
order) and their file names. In a folder, an image that cannot be read is skipped
with a warning, leaving its image id unused; if none can be read, the script fails
without writing `--json`. A single `--image` that cannot be read is an error.
"""

import functools
import os

import jax
from absl import flags, logging
from ml_collections import config_flags

from jaxvision import cli, coco, data, experiment, visualize
from jaxvision.errors import UserError
from jaxvision.tasks import detection, recognition

_CONFIG = config_flags.DEFINE_config_file("config", help_string="Config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's workdir.")
_IMAGE = flags.DEFINE_string("image", None, "An image file, or a folder of images.")
_OUT = flags.DEFINE_string("out", None, "Output image (or folder, for a folder --image).")
_JSON = flags.DEFINE_string("json", None, "Also write COCO-format detections here.")
_DRAW_THRESHOLD = flags.DEFINE_float("draw_threshold", 0.3, "Draw boxes scoring at least this.")
_GALLERY = flags.DEFINE_string("gallery", None, "Recognition: an identity folder to match --image to.")
_PAIRS = flags.DEFINE_string("pairs", None, "Recognition: a file of 'IMAGE_A IMAGE_B [SAME]' lines.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Recognition: same identity at cosine >= this.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv  # cli.run refuses stray arguments.
    config = _CONFIG.value
    if config.task == "recognition":
        return _match(config)
    if config.task != "detection":
        raise UserError(f"predict.py runs detectors and recognizers, not config.task {config.task!r}.")
    if not (_IMAGE.value and _OUT.value):
        raise UserError("Pass --image (a file or folder) and --out for a detector.")
    paths = visualize.list_images(_IMAGE.value)
    folder = os.path.isdir(_IMAGE.value)
    exp, variables, step = experiment.restore(config, _WORKDIR.value)
    predict = jax.jit(functools.partial(detection.predict, model=exp.model, config=config))
    channels = exp.input_shape[-1]
    results, skipped = [], []
    for image_id, path in enumerate(paths):
        try:
            image = visualize.load_image(path, channels)  # [H, W, C]
        except UserError as e:
            if not folder:
                raise
            logging.warning("Skipping an image. %s", e)
            skipped.append(os.path.basename(path))
            continue
        canvas, scale = data.letterbox(image, config.data.image_size)  # [S, S, C], [2]
        dets = jax.device_get(predict(variables, canvas[None]))  # batch of 1
        valid = dets["valid"][0]
        boxes = detection.to_original_pixels(dets["boxes"][0][valid], scale)  # [D, 4]
        scores, labels = dets["scores"][0][valid], dets["labels"][0][valid]
        shown = scores >= _DRAW_THRESHOLD.value
        height, width = image.shape[:2]
        rles = masks = None
        if "masks" in dets:  # [D, m, m] over each box -> image pixels.
            rles = coco.mask_rles(dets["masks"][0][valid], boxes, height, width)
            masks = [coco.paste_mask(m, b, height, width)
                     for m, b in zip(dets["masks"][0][valid][shown], boxes[shown], strict=True)]
        drawn = visualize.draw_detections(
            image, boxes[shown], labels[shown], scores[shown], exp.info.class_names, masks=masks
        )
        out = os.path.join(_OUT.value, os.path.basename(path)) if folder else _OUT.value
        visualize.save_image(out, drawn)
        logging.info("%s: %d detections (%d drawn) -> %s", path, len(scores), shown.sum(), out)
        found = [coco.ImageDetections(image_id, boxes, scores, labels, rles)]
        for result in coco.detections(found, exp.info.category_ids):
            results.append({**result, "file_name": os.path.basename(path)})
    if skipped:
        logging.warning("Skipped %d of %d images that could not be read: %s",
                        len(skipped), len(paths), ", ".join(skipped))
    if len(skipped) == len(paths):
        raise UserError(f"No image in folder {_IMAGE.value!r} could be read (see the warnings "
                        "above); pass a folder of valid image files.")
    if _JSON.value:
        coco.write_json(_JSON.value, results)
        logging.info("Wrote %d detections to %s", len(results), _JSON.value)
    logging.info("Checkpoint step %d; %d images.", step, len(paths) - len(skipped))


def _match(config):
    """Recognition: identify `--image` in `--gallery`, and/or score `--pairs`."""
    if not (_GALLERY.value and _IMAGE.value) and not _PAIRS.value:
        raise UserError("Pass --gallery DIR with --image QUERY, or --pairs FILE, for a recognizer.")
    pairs, same = recognition.read_pairs_file(_PAIRS.value) if _PAIRS.value else ([], [])
    exp, variables, _ = experiment.restore(config, _WORKDIR.value)
    matcher = recognition.Matcher(exp, variables)
    if _GALLERY.value:
        names, templates = matcher.gallery(_GALLERY.value)  # [I, D]
        queries = visualize.list_images(_IMAGE.value)
        for path, embedding in zip(queries, matcher.embed_files(queries), strict=True):
            similarities = templates @ embedding  # [I]
            best = int(similarities.argmax())
            print(f"{path}\t{names[best]}\t{similarities[best]:.4f}")
    if pairs:
        threshold = _THRESHOLD.value
        if threshold is None:
            threshold = recognition.logged_threshold(_WORKDIR.value)
        scores = matcher.score_pairs(pairs)
        for (a, b), score in zip(pairs, scores, strict=True):
            decision = "" if threshold is None else ("\tsame" if score >= threshold else "\tdifferent")
            print(f"{a}\t{b}\t{score:.4f}{decision}")
        labelled = [(score >= threshold) == s for score, s in zip(scores, same, strict=True)
                    if s is not None and threshold is not None]
        if labelled:
            logging.info("Accuracy at threshold %.4f: %.4f over %d labelled pairs.",
                         threshold, sum(labelled) / len(labelled), len(labelled))


if __name__ == "__main__":
    cli.run(main)
