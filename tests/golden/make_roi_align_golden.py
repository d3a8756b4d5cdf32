"""Writes tests/golden/roi_align.npz: torchvision's RoIAlign on random inputs.

Run once (torch and torchvision needed only here): `python tests/golden/make_roi_align_golden.py`.
`tests/ops/test_roi_align.py` compares jaxvision's `ops/roi_align.py` with it.

Cases:
- `single_*`: one feature map [2, 11, 13, 3], stride 4 (spatial_scale 0.25),
  7x7 bins, sampling_ratio 2, `aligned=True`; boxes include ones partly and
  wholly outside the image, tiny ones and an empty one.
- `multi_*`: four FPN levels (P2-P5 of a 64x96 canvas), boxes of all sizes:
  torchvision's `LevelMapper` (Lin et al.'s eq. 1, levels 2-5) picks each
  box's level, and `roi_align(aligned=True)` crops it there.
"""

import os

import numpy as np
import torch
import torchvision
from torchvision.ops import poolers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "roi_align.npz")


def _boxes(rng, n, width, height):
    x0 = rng.uniform(-10, width, n)
    y0 = rng.uniform(-10, height, n)
    w = np.exp(rng.uniform(np.log(0.5), np.log(width * 1.2), n))
    h = np.exp(rng.uniform(np.log(0.5), np.log(height * 1.2), n))
    return np.stack([x0, y0, x0 + w, y0 + h], axis=-1).astype(np.float32)  # [n, 4]


def main():
    rng = np.random.default_rng(0)
    out = {}

    # One level.
    features = rng.normal(size=(2, 11, 13, 3)).astype(np.float32)  # NHWC
    boxes = _boxes(rng, 16, 52, 44).reshape(2, 8, 4)
    boxes[0, 0] = [10, 10, 10, 10]  # Empty.
    boxes[1, 0] = [60, 50, 80, 70]  # Wholly outside.
    rois = torch.cat([torch.cat([torch.full((8, 1), float(b)), torch.from_numpy(boxes[b])], 1)
                      for b in range(2)])
    single = torchvision.ops.roi_align(torch.from_numpy(features).permute(0, 3, 1, 2), rois,
                                       output_size=(7, 7), spatial_scale=0.25,
                                       sampling_ratio=2, aligned=True)
    out["single_features"] = features
    out["single_boxes"] = boxes
    out["single_output"] = single.permute(0, 2, 3, 1).numpy().reshape(2, 8, 7, 7, 3)

    # Four levels, P2-P5 of a 64 x 96 canvas.
    strides = (4, 8, 16, 32)
    levels = [rng.normal(size=(1, 64 // s, 96 // s, 4)).astype(np.float32) for s in strides]
    boxes = _boxes(rng, 24, 96, 64)[None]  # [1, 24, 4]
    boxes[0, :4] = [[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448], [5, 5, 5.5, 5.5]]
    mapper = poolers.LevelMapper(k_min=2, k_max=5)
    assigned = mapper([torch.from_numpy(boxes[0])]).numpy()  # [24], 0..3
    output = np.zeros((1, 24, 5, 5, 4), np.float32)
    for level, stride in enumerate(strides):
        chosen = np.flatnonzero(assigned == level)
        if not len(chosen):
            continue
        rois = torch.cat([torch.zeros(len(chosen), 1), torch.from_numpy(boxes[0, chosen])], 1)
        crops = torchvision.ops.roi_align(
            torch.from_numpy(levels[level]).permute(0, 3, 1, 2), rois, output_size=(5, 5),
            spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)
        output[0, chosen] = crops.permute(0, 2, 3, 1).numpy()
    for level, features in enumerate(levels):
        out[f"multi_features_{level}"] = features
    out["multi_boxes"] = boxes
    out["multi_levels"] = assigned.astype(np.int32)[None] + 2  # [1, 24], levels 2..5
    out["multi_output"] = output
    np.savez_compressed(OUT, **out)
    print(f"Wrote {OUT} (torch {torch.__version__}, torchvision {torchvision.__version__}).")


if __name__ == "__main__":
    main()
