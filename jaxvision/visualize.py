"""Reading input images, drawing detections and tracks on them, plotting ROC curves (host side).

`scripts/predict.py` lists and loads the images it is given, runs a detector and
writes copies with one box, class name and score per detection drawn on them
(and, for instance segmentation, its mask as a translucent fill). Recognition
evaluation draws its ROC curve with `plot_roc` (matplotlib). `scripts/track.py`
draws each frame's tracks with `draw_tracks` (box, id and trail in the track's
colour) and writes the frames as a video or GIF with `write_video`.
"""

import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, features

from jaxvision.errors import UnreadableImage, UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Distinct, saturated RGB colours; class `label` is drawn in PALETTE[label % 10].
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (255, 225, 25),
)  # fmt: skip
_TAG_PAD = 2  # Pixels between a tag's text and the edge of its background.
MASK_ALPHA = 0.45  # Opacity of a mask's fill: the image stays visible under it.


def list_images(path: str) -> list[str]:
    """Returns `[path]` for a file, or a folder's image files (sorted, non-recursive).

    Images are recognised by their suffix (`IMAGE_SUFFIXES`, any case); hidden
    files (such as macOS `._name.jpg` companions) are skipped.
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UserError(
            f"Input path {path!r} does not exist; pass an image file or a folder of images."
        )
    names = sorted(
        name for name in os.listdir(path)
        if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")
        and os.path.isfile(os.path.join(path, name))
    )  # fmt: skip
    if not names:
        raise UserError(
            f"Folder {path!r} holds no images; expected files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}."
        )
    return [os.path.join(path, name) for name in names]


def _to_8_bit(img: Image.Image) -> Image.Image:
    """An integer ("I", "I;16...") or float ("F") PIL image -> mode "L"; others unchanged.

    PIL's own `convert("L")` clips such values at 255 instead of scaling them.
    """
    if img.mode == "F":  # Float: [0, 1] is black to white.
        values = np.asarray(img, np.float64) * 255.0  # [H, W]
    elif img.mode == "I" or img.mode.startswith("I;16"):  # Integer: [0, 65535] is black to white.
        values = np.asarray(img, np.float64) * (255.0 / 65535.0)  # [H, W]
    else:
        return img
    values = np.nan_to_num(np.rint(values), nan=0.0)  # NaN is black; +-inf is clipped next.
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))  # [H, W], mode "L"


def load_image(path: str, channels: int) -> np.ndarray:
    """Reads an image file, applying its EXIF orientation.

    8-bit images are converted by PIL (`convert("L")` or `convert("RGB")`).
    Single-channel images with wider pixels are scaled to uint8: integers
    (16-bit, or PIL's 32-bit mode "I", which is how it reads 16-bit PGMs) as
    `round(value * 255 / 65535)`, floats (such as float TIFFs) as
    `round(value * 255)`; values outside [0, 65535] or [0, 1] are clipped and
    float NaNs read as 0. PIL itself reads 16-bit RGB(A) and gray+alpha PNGs as
    8-bit, keeping the high byte of each value (`value // 256`).

    Args:
        path: Image file (any format PIL reads; the first frame of an animation).
        channels: 1 for grayscale, 3 for RGB.

    Returns:
        uint8 [H, W, channels].

    Raises:
        UserError: The file does not exist; `UnreadableImage` (a UserError) if
            it exists but does not decode.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}.")
    try:
        with Image.open(path) as img:
            img.load()  # Decode everything now, so a truncated file fails here.
            img = _to_8_bit(ImageOps.exif_transpose(img)).convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # A file that is there but does not decode is skipped by the loaders.
        error = UserError if isinstance(e, FileNotFoundError) else UnreadableImage
        raise error(
            f"Cannot read image {path!r} ({e}); check that it is a valid image file."
        ) from e
    return np.asarray(img, dtype=np.uint8).reshape(img.height, img.width, channels)  # [H, W, C]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W], [H, W, 1] or [H, W, 3] -> a new uint8 [H, W, 3] array."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))
    ):
        raise ValueError(
            f"Expected a uint8 [H, W], [H, W, 1] or [H, W, 3] image, got {image.dtype} "
            f"{image.shape}."
        )
    if image.ndim == 2:
        image = image[:, :, None]  # [H, W, 1]
    return np.repeat(image, 3 // image.shape[2], axis=2)  # [H, W, 3], always a copy


def _fill_masks(rgb: np.ndarray, masks: np.ndarray | Sequence[np.ndarray], labels: np.ndarray) -> None:
    """Blends each mask into `rgb` (uint8 [H, W, 3], in place) in its label's colour."""
    if len(masks) != len(labels):
        raise ValueError(f"Got {len(labels)} detections but {len(masks)} masks.")
    for mask, label in zip(masks, labels):
        mask = np.asarray(mask)  # [H, W]
        if mask.dtype != bool or mask.shape != rgb.shape[:2]:
            raise ValueError(
                f"Expected bool masks of the image's [H, W] {rgb.shape[:2]}, got {mask.dtype} {mask.shape}."
            )
        color = np.array(PALETTE[int(label) % len(PALETTE)], np.float64)  # [3]
        blended = (1 - MASK_ALPHA) * rgb[mask] + MASK_ALPHA * color  # [P, 3]
        rgb[mask] = np.rint(blended).astype(np.uint8)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    masks: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    line_width: int | None = None,
    tags: Sequence[str] | None = None,
) -> np.ndarray:
    """Draws each detection as a box outline with a "<class name> <score>" tag.

    With `masks`, each detection's mask is first filled in its box's colour at
    opacity `MASK_ALPHA` (in detection order, so later masks lie on top); the
    outlines and tags are drawn over the fills.

    Args:
        image: uint8 [H, W], [H, W, 1] or [H, W, 3]; not modified.
        boxes: float [K, 4] (x0, y0, x1, y1) in `image` pixels; parts outside
            the image are clipped.
        labels: int [K] indices into `class_names` (an index past its end is drawn as the number).
        scores: float [K].
        class_names: Names of the classes.
        masks: None, or bool [K, H, W] (or K bool [H, W] arrays): each
            detection's mask already pasted into `image` pixels (e.g. by
            `jaxvision.coco.paste_mask`).
        line_width: Outline width in pixels; default grows with the image size.
        tags: [K] texts that replace the "<class name> <score>" tags.

    Returns:
        uint8 [H, W, 3] RGB copy of `image` with the detections drawn.
    """
    rgb = to_rgb(image)  # [H, W, 3]
    height, width = rgb.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # [K, 4]
    labels = np.asarray(labels).reshape(-1)  # [K]
    scores = np.asarray(scores).reshape(-1)  # [K]
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"Got {len(boxes)} boxes, {len(labels)} labels and {len(scores)} scores.")
    if masks is not None:
        _fill_masks(rgb, masks, labels)
    if len(boxes) == 0:
        return rgb
    line_width = line_width or max(1, round(max(height, width) / 300))
    font_size = max(10, round(max(height, width) / 40))
    # A font size needs FreeType; without it PIL's default is a fixed bitmap font.
    has_freetype = features.check("freetype2")
    font = ImageFont.load_default(font_size) if has_freetype else ImageFont.load_default()
    pil = Image.fromarray(rgb)
    draw = ImageDraw.Draw(pil)
    for k, (box, label, score) in enumerate(zip(boxes, labels, scores, strict=True)):
        (x0, x1), (y0, y1) = np.sort(box[[0, 2]]), np.sort(box[[1, 3]])
        if not np.all(np.isfinite(box)) or x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
            continue  # Nothing of it is visible.
        x0, x1 = np.clip([x0, x1], 0, width - 1).round().astype(int)
        y0, y1 = np.clip([y0, y1], 0, height - 1).round().astype(int)
        label = int(label)
        color = PALETTE[label % len(PALETTE)]
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line_width)  # Width grows inward.
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = tags[k] if tags is not None else f"{name} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_w, tag_h = right - left + 2 * _TAG_PAD, bottom - top + 2 * _TAG_PAD
        tag_x = max(0, min(x0, width - tag_w))
        tag_y = y0 - tag_h if y0 >= tag_h else y0  # Above the box, else inside it.
        draw.rectangle((tag_x, tag_y, tag_x + tag_w - 1, tag_y + tag_h - 1), fill=color)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        text_color = (0, 0, 0) if luma > 128 else (255, 255, 255)
        text_xy = (tag_x + _TAG_PAD - left, tag_y + _TAG_PAD - top)
        draw.text(text_xy, text, fill=text_color, font=font)
    return np.asarray(pil, dtype=np.uint8)  # [H, W, 3]


def save_image(path: str, image: np.ndarray) -> None:
    """Writes uint8 [H, W], [H, W, 1] or [H, W, 3] `image`; the format follows the suffix.

    The parent folder is created when missing.
    """
    image = np.asarray(image)
    pil = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        pil.save(path)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"Cannot write image {path!r} ({e}); choose a writable path with an image suffix."
        ) from e


def plot_roc(path: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> None:
    """Writes ROC curves, true accept rate over false accept rate (log axis), to `path` (PNG).

    Args:
      path: the image file; its folder is created when missing.
      curves: legend label -> `(far [T], tar [T])`, a curve's points
        (`metrics.verification.roc_curve`); points at FAR 0 cannot be drawn on
        the log axis and are left out.
      title: the plot's title.
    """
    import matplotlib  # Here, not at the top: only ROC plots need it.

    matplotlib.use("Agg")  # Files only, whatever display the machine has.
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    smallest = 1.0
    for label, (far, tar) in curves.items():
        drawn = far > 0
        ax.plot(far[drawn], tar[drawn], label=label)
        smallest = min(smallest, far[drawn].min(initial=1.0))
    ax.set_xscale("log")
    ax.set_xlim(min(max(smallest, 1e-6), 1e-2), 1.0)  # At least two decades.
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def draw_tracks(
    image: np.ndarray, boxes: np.ndarray, ids: np.ndarray,
    trails: Mapping[int, Sequence[tuple[float, float]]], *, upscale: int = 1,
) -> np.ndarray:
    """Draws each track's box and id, and its trail, in a colour of its own.

    Args:
        image: uint8 [H, W], [H, W, 1] or [H, W, 3]; not modified.
        boxes: float [K, 4] (x0, y0, x1, y1) in `image` pixels.
        ids: int [K] track ids; track `i` is drawn in PALETTE[i % 10].
        trails: track id -> its recent box centres (x, y) in `image` pixels,
            oldest first; drawn as a line for the ids in `ids`.
        upscale: draws on the image enlarged this many times (nearest
            neighbour), so tags fit on small frames.

    Returns:
        uint8 [H * upscale, W * upscale, 3] RGB.
    """
    rgb = to_rgb(image)  # [H, W, 3]
    if upscale > 1:
        rgb = rgb.repeat(upscale, axis=0).repeat(upscale, axis=1)
    ids = np.asarray(ids, np.int64).reshape(-1)  # [K]
    pil = Image.fromarray(rgb)
    draw = ImageDraw.Draw(pil)
    for track_id in ids:
        points = [(x * upscale, y * upscale) for x, y in trails.get(int(track_id), ())]
        if len(points) > 1:
            draw.line(points, fill=PALETTE[track_id % len(PALETTE)], width=max(1, upscale // 2))
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * upscale  # [K, 4]
    return draw_detections(
        np.asarray(pil), boxes, ids, np.ones(len(ids)), (), tags=[str(i) for i in ids],
    )


def write_video(path: str, frames: Sequence[np.ndarray], fps: float) -> None:
    """Writes uint8 RGB frames [H, W, 3] as an animated GIF (by suffix) or a video (MP4, ...).

    GIFs are written with PIL; other formats with imageio's FFmpeg plugin.

    Raises:
        UserError: no frames, or the file cannot be written.
    """
    if not frames:
        raise UserError(f"No frame to write to {path!r}: none of the input frames could be read.")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        if path.lower().endswith(".gif"):
            first, *rest = (Image.fromarray(frame) for frame in frames)
            first.save(path, save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
        else:
            import imageio.v3 as iio  # Here, not at the top: only videos need FFmpeg.

            iio.imwrite(path, np.stack(frames), fps=fps, codec="libx264", macro_block_size=1)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(
            f"Cannot write video {path!r} ({e}); choose a writable path ending in .gif or .mp4."
        ) from e
