"""Tests for jaxvision.visualize: listing, loading, drawing and saving images."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxvision import visualize
from jaxvision.errors import UserError

BLACK = (0, 0, 0)


def _draw_two_boxes():
    image = np.zeros((128, 128), np.uint8)  # [H, W] grayscale, black.
    boxes = np.array([[10, 40, 60, 100], [70, 30, 120, 70]], np.float32)  # [2, 4] xyxy
    out = visualize.draw_detections(
        image, boxes, np.array([0, 1]), np.array([0.9, 0.5]), ["cat", "dog"]
    )
    return image, out


def test_draw_detections_outlines_in_class_colours():
    image, out = _draw_two_boxes()
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    cat, dog = visualize.PALETTE[0], visualize.PALETTE[1]
    assert cat != dog and BLACK not in (cat, dog)
    # Left, right and bottom edges (the tags sit above the boxes).
    for y, x in [(70, 10), (70, 60), (100, 35)]:
        assert tuple(out[y, x]) == cat, (y, x)
    for y, x in [(50, 70), (50, 120), (70, 95)]:
        assert tuple(out[y, x]) == dog, (y, x)
    for y, x in [(70, 35), (72, 30), (50, 95), (120, 5), (120, 125), (110, 65)]:
        assert tuple(out[y, x]) == BLACK, (y, x)  # Inside the boxes, or far from them.
    assert not image.any()  # The input is not modified.


def test_draw_detections_writes_text_on_tag():
    _, out = _draw_two_boxes()
    cat = visualize.PALETTE[0]
    tag = out[40 - 8 : 40, 12:40].reshape(-1, 3)  # Just above box 0, right of its left edge.
    is_background = np.all(tag == cat, axis=1)
    assert is_background.any()  # The filled tag background.
    assert not is_background.all()  # Text pixels on it.


def test_draw_detections_tag_inside_image_for_box_at_top_edge():
    image = np.zeros((128, 128, 1), np.uint8)  # [H, W, 1]
    out = visualize.draw_detections(
        image, np.array([[20.0, 0.0, 100.0, 80.0]]), np.array([2]), np.array([0.7]), ["a", "b", "c"]
    )
    tag = out[2:8, 22:30].reshape(-1, 3)  # Inside the box's top-left corner.
    assert np.all(tag == visualize.PALETTE[2], axis=1).any()
    assert tuple(out[60, 60]) == BLACK


def test_draw_detections_no_boxes_returns_rgb_copy():
    image = np.arange(128 * 128, dtype=np.int64).reshape(128, 128).astype(np.uint8)
    out = visualize.draw_detections(
        image, np.zeros((0, 4), np.float32), np.zeros(0, int), np.zeros(0), ["cat"]
    )
    np.testing.assert_array_equal(out, np.repeat(image[:, :, None], 3, axis=2))
    rgb = np.zeros((4, 5, 3), np.uint8)
    out = visualize.draw_detections(rgb, np.zeros((0, 4)), np.zeros(0, int), np.zeros(0), [])
    out[0, 0] = 1
    assert not rgb.any()  # A copy, not the input.


def test_draw_detections_clips_boxes_outside_image():
    image = np.zeros((128, 128), np.uint8)
    boxes = np.array([[-20, 50, 60, 200], [500, 500, 600, 600]], np.float32)  # [2, 4]
    out = visualize.draw_detections(image, boxes, np.array([0, 1]), np.array([0.9, 0.8]), ["a", "b"])
    colour = visualize.PALETTE[0]
    assert tuple(out[50, 30]) == colour  # Top edge.
    assert tuple(out[90, 60]) == colour  # Right edge.
    assert tuple(out[90, 30]) == BLACK  # Interior.
    assert not np.all(out == visualize.PALETTE[1], axis=2).any()  # Invisible box: nothing.


def test_draw_detections_line_width_scales_with_image():
    image = np.zeros((900, 900, 3), np.uint8)
    out = visualize.draw_detections(
        image, np.array([[100.0, 300.0, 600.0, 800.0]]), np.array([0]), np.array([1.0]), ["x"]
    )
    colour = visualize.PALETTE[0]
    row = np.all(out[500] == colour, axis=1)  # [W]
    assert row[100:103].all() and not row[103]  # 3 pixels wide at 900 pixels.


def _draw_two_masks(image, masks):
    boxes = np.array([[10, 40, 60, 100], [70, 30, 120, 70]], np.float32)  # [2, 4] xyxy
    return visualize.draw_detections(
        image, boxes, np.array([0, 1]), np.array([0.9, 0.5]), ["cat", "dog"], masks
    )


def test_draw_detections_fills_masks_in_box_colours():
    image = np.full((128, 128, 3), 100, np.uint8)  # [H, W, 3] gray.
    masks = np.zeros((2, 128, 128), bool)  # [2, H, W]
    masks[0, 60:90, 5:50] = True  # Across box 0's left edge (x = 10).
    masks[1, 40:60, 80:110] = True  # Inside box 1.
    out = _draw_two_masks(image, masks)
    plain = _draw_two_masks(image, None)
    for index, (y, x) in enumerate([(70, 30), (50, 95)]):
        colour = np.array(visualize.PALETTE[index], np.float64)
        want = np.rint(100 * (1 - visualize.MASK_ALPHA) + colour * visualize.MASK_ALPHA)
        np.testing.assert_array_equal(out[y, x], want)
        assert np.abs(out[y, x] - colour).sum() < np.abs(100 - colour).sum()  # Towards the box colour.
    assert tuple(out[70, 10]) == visualize.PALETTE[0]  # The outline lies on top of the fill.
    outside = ~masks.any(axis=0)  # [H, W]
    np.testing.assert_array_equal(out[outside], plain[outside])  # Nothing else changes.
    np.testing.assert_array_equal(_draw_two_masks(image, list(masks)), out)  # A list of [H, W].
    assert (image == 100).all()  # The input is not modified.


def test_draw_detections_without_masks_unchanged():
    image = np.full((128, 128, 3), 100, np.uint8)
    boxes = np.array([[10, 40, 60, 100], [70, 30, 120, 70]], np.float32)  # [2, 4]
    plain = visualize.draw_detections(image, boxes, np.array([0, 1]), np.array([0.9, 0.5]), ["cat", "dog"])
    np.testing.assert_array_equal(_draw_two_masks(image, None), plain)
    np.testing.assert_array_equal(_draw_two_masks(image, np.zeros((2, 128, 128), bool)), plain)
    with pytest.raises(ValueError, match="2 detections but 1 masks"):
        _draw_two_masks(image, np.zeros((1, 128, 128), bool))
    with pytest.raises(ValueError, match="bool masks"):
        _draw_two_masks(image, np.zeros((2, 64, 64), bool))


def _touch(path, content=b""):
    with open(path, "wb") as f:
        f.write(content)


def test_list_images(tmp_path):
    for name in ["b.png", "a.JPG", "c.webp", "notes.txt", "._d.jpg"]:
        _touch(tmp_path / name)
    os.mkdir(tmp_path / "sub.png")  # A folder, even with an image suffix, is skipped.
    _touch(tmp_path / "sub.png" / "e.png")
    assert visualize.list_images(str(tmp_path)) == [
        str(tmp_path / name) for name in ["a.JPG", "b.png", "c.webp"]
    ]
    assert visualize.list_images(str(tmp_path / "b.png")) == [str(tmp_path / "b.png")]


def test_list_images_errors(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(UserError, match="missing"):
        visualize.list_images(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    _touch(empty / "notes.txt")
    with pytest.raises(UserError, match=r"empty.*\.png") as info:
        visualize.list_images(str(empty))
    assert str(empty) in str(info.value)


def test_load_image_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)  # [H, W, 3]
    gray = rng.integers(0, 256, (7, 5), dtype=np.uint8)  # [H, W]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(visualize.load_image(str(tmp_path / "rgb.png"), 3), rgb)
    np.testing.assert_array_equal(visualize.load_image(str(tmp_path / "gray.png"), 1), gray[:, :, None])
    as_rgb = visualize.load_image(str(tmp_path / "gray.png"), 3)
    np.testing.assert_array_equal(as_rgb, np.repeat(gray[:, :, None], 3, axis=2))
    as_gray = visualize.load_image(str(tmp_path / "rgb.png"), 1)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]  # [H, W, 1]
    assert as_gray.shape == (7, 5, 1) and as_gray.dtype == np.uint8
    np.testing.assert_array_equal(as_gray, expected)


def test_load_image_applies_exif_orientation(tmp_path):
    image = Image.fromarray(np.zeros((2, 6, 3), np.uint8))  # [H=2, W=6]
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to display.
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert visualize.load_image(str(tmp_path / "rotated.jpg"), 3).shape == (6, 2, 3)


# 16-bit values around the rounding points of value * 255 / 65535 (= value / 257).
WIDE = np.array([[0, 128, 129, 257], [32767, 32768, 65407, 65535]], np.uint16)  # [2, 4]
WIDE_AS_8_BIT = np.array([[0, 0, 1, 1], [127, 128, 255, 255]], np.uint8)  # By hand.


def _check_gray(path, expected):
    """`path` loads as `expected` [H, W] with 1 and with 3 channels."""
    np.testing.assert_array_equal(visualize.load_image(path, 1), expected[:, :, None])
    np.testing.assert_array_equal(
        visualize.load_image(path, 3), np.repeat(expected[:, :, None], 3, axis=2)
    )


def test_load_image_scales_16_bit_grayscale(tmp_path):
    png = str(tmp_path / "wide.png")
    Image.fromarray(WIDE).save(png)
    assert Image.open(png).mode == "I;16"
    _check_gray(png, WIDE_AS_8_BIT)
    pgm = str(tmp_path / "wide.pgm")  # PIL reads 16-bit PGMs as 32-bit mode "I".
    _touch(pgm, b"P5 4 2 65535\n" + WIDE.astype(">u2").tobytes())
    assert Image.open(pgm).mode == "I"
    _check_gray(pgm, WIDE_AS_8_BIT)


def test_load_image_scales_float_from_0_1_and_clips(tmp_path):
    values = np.array([[-0.5, 0.0, 0.2, 0.75], [1.0, 2.0, np.nan, np.inf]], np.float32)  # [2, 4]
    path = str(tmp_path / "float.tif")
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "F"
    _check_gray(path, np.array([[0, 0, 51, 191], [255, 255, 0, 255]], np.uint8))  # By hand.


def _png_16_bit_rgb(path, rgb):
    """Writes uint16 [H, W, 3] `rgb` as a 16-bit PNG, which PIL cannot write."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb)  # Filter 0 per row.
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, RGB.
    _touch(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_load_image_16_bit_rgb_within_1_of_scaled(tmp_path):
    rgb = np.stack([WIDE, WIDE[::-1], WIDE[:, ::-1]], axis=-1)  # [2, 4, 3]
    path = str(tmp_path / "wide_rgb.png")
    _png_16_bit_rgb(path, rgb)
    image = visualize.load_image(path, 3)
    scaled = np.rint(rgb / 257.0)  # [2, 4, 3] PIL keeps each high byte: within 1 of it.
    assert image.dtype == np.uint8 and np.abs(image - scaled).max() <= 1


def test_load_image_bad_files_raise(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    _touch(truncated, good.read_bytes()[:-30])
    not_image = tmp_path / "text.jpg"
    _touch(not_image, b"hello")
    for path in [truncated, not_image, tmp_path / "missing.png"]:
        with pytest.raises(UserError) as info:
            visualize.load_image(str(path), 3)
        assert str(path) in str(info.value)


def test_save_image(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (6, 4, 3), dtype=np.uint8)
    path = tmp_path / "new" / "deeper" / "out.png"
    visualize.save_image(str(path), image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    visualize.save_image(str(tmp_path / "gray.png"), image[:, :, :1])  # [H, W, 1]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "gray.png")), image[:, :, 0])


def test_save_image_unwritable_raises(tmp_path):
    _touch(tmp_path / "file")
    for path in [tmp_path / "file" / "out.png", tmp_path / "out.unknown"]:
        with pytest.raises(UserError) as info:
            visualize.save_image(str(path), np.zeros((2, 2, 3), np.uint8))
        assert str(path) in str(info.value)
