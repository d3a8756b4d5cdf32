"""Tests for jaxvision.data.identity_files: identity folders, verification .bins, pairs."""

import io
import logging
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from jaxvision.data import identity_files
from jaxvision.data.identity_files import (
    IdentityFolderSource,
    VerificationBinSource,
    folder_pairs,
    write_verification_bin,
)
from jaxvision.errors import UserError


def _random_image(rng, height, width, channels=3):
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _save(path, array, mode=None, **kw):
    Image.fromarray(array, mode).save(path, **kw)
    return path


def _expected_rgb(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture
def faces(tmp_path):
    """A tiny identity folder: 3 identities with images, one without, some other files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    for name in ("alice", "bob", "carol", "empty"):
        (root / name).mkdir(parents=True)
    files = [
        _save(root / "alice" / "1.png", _random_image(rng, 8, 10)),
        _save(root / "alice" / "2.JPG", _random_image(rng, 12, 9, 1)),  # Grayscale JPEG.
        _save(root / "bob" / "a.png", _random_image(rng, 7, 7, 4)),  # RGBA.
        _save(root / "carol" / "x.bmp", _random_image(rng, 5, 6)),
        _save(root / "carol" / "y.jpeg", _random_image(rng, 16, 11)),
        _save(root / "carol" / "z.webp", _random_image(rng, 9, 13), lossless=True),
    ]
    (root / "bob" / "notes.txt").write_text("not an image")
    _save(root / "bob" / "._a.png", _random_image(rng, 4, 4))  # Hidden: ignored.
    (root / "empty" / "readme.txt").write_text("no images here")
    (root / "list.txt").write_text("a file next to the identities")
    return str(root), [str(f) for f in files]


def test_folder_lists_identities_and_labels(faces, caplog):
    root, _ = faces
    with caplog.at_level(logging.WARNING):
        source = IdentityFolderSource(root)
    assert source.path == root
    assert source.class_names == ("alice", "bob", "carol")
    assert source.labels.dtype == np.int32
    np.testing.assert_array_equal(source.labels, [0, 0, 1, 2, 2, 2])
    assert len(source) == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'empty'" in warnings[0] and root in warnings[0]


def test_folder_decodes_rgb_identity_major(faces):
    root, files = faces
    source = IdentityFolderSource(root)
    for i, path in enumerate(files):
        record = source[i]
        expected = _expected_rgb(path)
        assert record["image"].dtype == np.uint8 and record["image"].shape[2] == 3
        np.testing.assert_array_equal(record["image"], expected)
        assert record["label"] == source.labels[i] and record["label"].dtype == np.int32
        assert record["id"] == i and record["id"].dtype == np.int32
    gray = source[1]["image"]  # The grayscale JPEG: three equal channels.
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    assert source[2]["image"].shape == (7, 7, 3)  # RGBA -> RGB.
    assert source[-1]["id"] == 5 and source[np.int64(3)]["id"] == 3
    with pytest.raises(IndexError):
        source[6]


def test_folder_lists_without_decoding(faces, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("an image was read while listing")

    monkeypatch.setattr(identity_files, "load_image", fail)
    monkeypatch.setattr(Image, "open", fail)
    np.testing.assert_array_equal(IdentityFolderSource(faces[0]).labels, [0, 0, 1, 2, 2, 2])


def test_folder_source_pickles(faces):
    source = IdentityFolderSource(faces[0])
    copy = pickle.loads(pickle.dumps(source))
    assert len(copy) == len(source) and copy.class_names == source.class_names
    np.testing.assert_array_equal(copy.labels, source.labels)
    np.testing.assert_array_equal(copy[4]["image"], source[4]["image"])


def test_folder_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(UserError, match="does not exist") as e:
        IdentityFolderSource(missing)
    assert missing in str(e.value)

    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"x")
    with pytest.raises(UserError, match="not a folder") as e:
        IdentityFolderSource(str(a_file))
    assert str(a_file) in str(e.value)

    flat = tmp_path / "flat"
    flat.mkdir()
    _save(flat / "a.png", np.zeros((4, 4, 3), np.uint8))  # Images, but no identity folders.
    with pytest.raises(UserError, match="no sub-folders") as e:
        IdentityFolderSource(str(flat))
    assert str(flat) in str(e.value)

    no_images = tmp_path / "no_images"
    (no_images / "someone").mkdir(parents=True)
    (no_images / "someone" / "a.txt").write_text("text")
    with pytest.raises(UserError, match="no images") as e:
        IdentityFolderSource(str(no_images))
    assert str(no_images) in str(e.value)


def test_folder_corrupt_image_names_it(faces):
    root, _ = faces
    bad = f"{root}/bob/b.jpg"
    with open(bad, "wb") as f:
        f.write(b"this is not a jpeg")
    source = IdentityFolderSource(root)  # Listing does not read it.
    np.testing.assert_array_equal(source.labels, [0, 0, 1, 1, 2, 2, 2])
    with pytest.raises(UserError) as e:
        source[3]
    assert bad in str(e.value)
    assert source[2]["image"].shape == (7, 7, 3)  # Its neighbour still reads.


def _pair_images(num_pairs, seed=0):
    rng = np.random.default_rng(seed)
    images = [_random_image(rng, 6 + i % 5, 7 + i % 3) for i in range(2 * num_pairs)]
    images[3] = _random_image(rng, 5, 8, 1)  # Grayscale [H, W].
    issame = [k % 3 == 0 for k in range(num_pairs)]
    return images, issame


def test_bin_round_trip_png(tmp_path):
    images, issame = _pair_images(20)
    path = str(tmp_path / "lfw.bin")
    write_verification_bin(path, images, issame, format="PNG")
    source = VerificationBinSource(path)
    assert source.name == "lfw" and source.path == path and len(source) == 40
    for i, image in enumerate(images):
        record = source[i]
        expected = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        assert record["image"].dtype == np.uint8
        np.testing.assert_array_equal(record["image"], expected)
        assert record["label"] == -1 and record["label"].dtype == np.int32
        assert record["id"] == i and record["id"].dtype == np.int32
    pairs = source.pairs()
    assert pairs.dtype == np.int32 and pairs.shape == (20, 4)
    k = np.arange(20)
    np.testing.assert_array_equal(pairs[:, 0], 2 * k)
    np.testing.assert_array_equal(pairs[:, 1], 2 * k + 1)
    np.testing.assert_array_equal(pairs[:, 2], np.array(issame, np.int32))
    np.testing.assert_array_equal(pairs[:, 3], k // 2)  # 10 consecutive folds of 2.


def test_bin_fold_sizes_follow_pair_order(tmp_path):
    images, issame = _pair_images(15)
    path = str(tmp_path / "agedb_30.bin")
    write_verification_bin(path, images, issame, format="PNG")
    folds = VerificationBinSource(path).pairs()[:, 3]
    np.testing.assert_array_equal(folds, np.arange(15) * 10 // 15)
    assert (np.diff(folds) >= 0).all() and set(folds) == set(range(10))


def test_bin_round_trip_jpeg_is_close(tmp_path):
    rng = np.random.default_rng(1)
    smooth = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)
    images = [smooth, np.flipud(smooth), _random_image(rng, 20, 24), smooth]
    path = str(tmp_path / "cfp_fp.bin")
    write_verification_bin(path, images, [True, False])
    with open(path, "rb") as f:
        bins, issame = pickle.load(f)
    assert all(isinstance(b, bytes) and b[:2] == b"\xff\xd8" for b in bins)  # JPEG.
    assert issame == [True, False]
    source = VerificationBinSource(path)
    assert source.name == "cfp_fp" and source[2]["image"].shape == (20, 24, 3)
    error = np.abs(source[0]["image"].astype(int) - smooth.astype(int)).mean()
    assert error < 3, error


def _encoded(rng, size=6):
    buffer = io.BytesIO()
    Image.fromarray(_random_image(rng, size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bin_raw_pickle_of_bytes_and_buffers(tmp_path):
    rng = np.random.default_rng(2)
    bins = [_encoded(rng) for _ in range(4)]
    path = tmp_path / "mine.bin"
    with open(path, "wb") as f:  # Default protocol, as a user might write it.
        pickle.dump(([bins[0], bytearray(bins[1]), np.frombuffer(bins[2], np.uint8), bins[3]],
                     [np.bool_(True), False]), f)
    source = VerificationBinSource(str(path))
    assert source.name == "mine"
    for i in range(4):
        np.testing.assert_array_equal(source[i]["image"], _expected_rgb(io.BytesIO(bins[i])))
    np.testing.assert_array_equal(source.pairs(), [[0, 1, 1, 0], [2, 3, 0, 5]])


def _python2_pickle(bins, issame):
    """What Python 2's `pickle.dump((bins, issame), f, protocol=2)` writes for str bins."""
    out = [b"\x80\x02("]  # PROTO 2, MARK
    for data in bins:
        out.append(b"T" + struct.pack("<I", len(data)) + data)  # BINSTRING (a py2 str)
    out.append(b"l(")  # LIST, MARK
    out.extend(b"\x88" if s else b"\x89" for s in issame)  # NEWTRUE / NEWFALSE
    out.append(b"l\x86.")  # LIST, TUPLE2, STOP
    return b"".join(out)


def test_bin_reads_python2_pickles(tmp_path):
    rng = np.random.default_rng(3)
    bins = [_encoded(rng) for _ in range(4)]
    path = tmp_path / "lfw.bin"
    path.write_bytes(_python2_pickle(bins, [False, True]))
    with pytest.raises(UnicodeDecodeError):  # Why insightface reads with encoding="bytes".
        pickle.loads(path.read_bytes())
    source = VerificationBinSource(str(path))
    np.testing.assert_array_equal(source[3]["image"], _expected_rgb(io.BytesIO(bins[3])))
    np.testing.assert_array_equal(source.pairs()[:, 2], [0, 1])


def test_bin_does_not_decode_at_construction(tmp_path, monkeypatch):
    images, issame = _pair_images(3)
    path = str(tmp_path / "lfw.bin")
    write_verification_bin(path, images, issame, format="PNG")

    def fail(*args, **kwargs):
        raise AssertionError("an image was decoded at construction")

    monkeypatch.setattr(identity_files, "load_image", fail)
    monkeypatch.setattr(Image, "open", fail)
    assert len(VerificationBinSource(path)) == 6


def test_bin_source_pickles(tmp_path):
    images, issame = _pair_images(2)
    path = str(tmp_path / "lfw.bin")
    write_verification_bin(path, images, issame, format="PNG")
    source = VerificationBinSource(path)
    copy = pickle.loads(pickle.dumps(source))
    assert len(copy) == 4 and copy.name == "lfw"
    np.testing.assert_array_equal(copy[1]["image"], images[1])
    np.testing.assert_array_equal(copy.pairs(), source.pairs())


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x00\x01 certainly not a pickle", "does not unpickle"),
        (b"", "does not unpickle"),
        (pickle.dumps({"bins": [], "issame": []}), "dict"),
        (pickle.dumps(([b"a", b"b", b"c"], [True])), "3 images for 1 pairs"),
        (pickle.dumps(([b"a", b"b"], [True], [1])), "3-tuple"),
        (pickle.dumps(([], [])), "at least one pair"),
        (pickle.dumps(([b"a", "text"], [True])), "image 1 is a str"),
        (pickle.dumps(([b"a", np.zeros((4, 4, 3), np.uint8)], [True])), "image 1 is a uint8"),
        (pickle.dumps(([b"a", b"b"], ["yes"])), "not a list of bools"),
    ],
    ids=["garbage", "empty", "dict", "lengths", "3-tuple", "no-pairs", "str-image",
         "decoded-array", "str-issame"],
)
def test_bin_not_a_verification_file(tmp_path, content, problem):
    path = tmp_path / "lfw.bin"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not an insightface verification .bin") as e:
        VerificationBinSource(str(path))
    assert str(path) in str(e.value) and problem in str(e.value)
    assert "pickle of (bins, issame_list)" in str(e.value)  # The expected format.


def test_bin_missing_file(tmp_path):
    path = str(tmp_path / "lfw.bin")
    with pytest.raises(UserError, match="insightface verification .bin") as e:
        VerificationBinSource(path)
    assert path in str(e.value)


def test_bin_undecodable_image_names_file_and_index(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "lfw.bin"
    with open(path, "wb") as f:
        pickle.dump(([_encoded(rng), b"garbage", _encoded(rng), _encoded(rng)], [1, 0]), f)
    source = VerificationBinSource(str(path))  # Only the pickle is read.
    assert source[0]["image"].shape == (6, 6, 3)
    with pytest.raises(UserError, match="Image 1 of") as e:
        source[1]
    assert str(path) in str(e.value)


def test_write_verification_bin_checks_arguments(tmp_path):
    images, issame = _pair_images(2)
    with pytest.raises(ValueError, match="two images per pair"):
        write_verification_bin(str(tmp_path / "a.bin"), images[:3], issame)
    with pytest.raises(ValueError, match="format"):
        write_verification_bin(str(tmp_path / "a.bin"), images, issame, format="GIF")
    with pytest.raises(ValueError, match="uint8"):
        write_verification_bin(str(tmp_path / "a.bin"), [np.zeros((4, 4), np.float32)] * 4, issame)
    with pytest.raises(UserError, match="Cannot write"):
        write_verification_bin(str(tmp_path / "no" / "a.bin"), images, issame)


def _labels(counts):
    """int32 [N]: identity u repeated counts[u] times, shuffled so ids are not grouped."""
    labels = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    return np.random.default_rng(123).permutation(labels)


def _check_pairs(pairs, labels, num_folds):
    """The invariants every folder_pairs result has."""
    assert pairs.dtype == np.int32 and pairs.ndim == 2 and pairs.shape[1] == 4
    a, b, same, fold = pairs.T
    assert (a < b).all() and (b < len(labels)).all() and (a >= 0).all()
    np.testing.assert_array_equal(same, (labels[a] == labels[b]).astype(np.int32))
    assert len({(int(x), int(y)) for x, y in zip(a, b)}) == len(pairs)  # No duplicates.
    assert (np.diff(fold) >= 0).all() and set(fold) <= set(range(num_folds))  # Consecutive.
    folds_of = {}  # Identity -> the folds it appears in.
    for x, y, f in zip(a, b, fold):
        for identity in (labels[x], labels[y]):
            folds_of.setdefault(int(identity), set()).add(int(f))
    assert all(len(f) == 1 for f in folds_of.values()), folds_of  # Identity-disjoint.
    return folds_of


def test_folder_pairs_counts_and_correctness():
    labels = _labels([2, 3, 4, 5, 6] * 4)  # 20 identities.
    pairs = folder_pairs(labels, num_folds=10, pairs_per_fold=4, seed=0)
    _check_pairs(pairs, labels, 10)
    assert pairs.shape == (40, 4)
    np.testing.assert_array_equal(np.bincount(pairs[:, 3]), [4] * 10)
    np.testing.assert_array_equal(np.bincount(pairs[:, 3], weights=pairs[:, 2]), [2] * 10)


def test_folder_pairs_default_sizes():
    labels = _labels([20] * 100)
    pairs = folder_pairs(labels)
    folds_of = _check_pairs(pairs, labels, 10)
    assert pairs.shape == (3000, 4)
    np.testing.assert_array_equal(np.bincount(pairs[:, 3]), [300] * 10)
    np.testing.assert_array_equal(np.bincount(pairs[:, 3], weights=pairs[:, 2]), [150] * 10)
    # 10 identities per fold; same pairs are spread over them.
    assert len(folds_of) == 100
    assert len(set(labels[pairs[pairs[:, 2] == 1, 0]])) >= 90


def test_folder_pairs_deterministic_from_seed():
    labels = _labels([2, 5, 3, 8] * 5)
    first = folder_pairs(labels, num_folds=5, pairs_per_fold=10, seed=7)
    np.testing.assert_array_equal(first, folder_pairs(labels, num_folds=5, pairs_per_fold=10, seed=7))
    assert not np.array_equal(first, folder_pairs(labels, num_folds=5, pairs_per_fold=10, seed=8))


def test_folder_pairs_uneven_folds_take_every_pair(caplog):
    labels = _labels([3] * 10)  # 5 folds of 2 identities: 6 same and 9 different pairs each.
    with caplog.at_level(logging.WARNING):
        pairs = folder_pairs(labels, num_folds=5, pairs_per_fold=100, name="tiny")
    _check_pairs(pairs, labels, 5)
    np.testing.assert_array_equal(np.bincount(pairs[:, 3]), [12] * 5)
    np.testing.assert_array_equal(np.bincount(pairs[:, 3], weights=pairs[:, 2]), [6] * 5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tiny" in warnings[0] and "too few images" in warnings[0]


def test_folder_pairs_single_image_identities(caplog):
    counts = [4] * 10 + [1] * 7  # Identities 10..16 have a single image.
    labels = _labels(counts)
    with caplog.at_level(logging.WARNING):
        pairs = folder_pairs(labels, num_folds=5, pairs_per_fold=20, name="faces")
    folds_of = _check_pairs(pairs, labels, 5)
    singles = set(range(10, 17))
    same = pairs[pairs[:, 2] == 1]
    assert not singles & (set(labels[same[:, 0]]) | set(labels[same[:, 1]]))
    assert singles & set(folds_of)  # They do appear, in different pairs.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    single_warnings = [w for w in warnings if "single image" in w]
    assert len(single_warnings) == 1
    assert "faces" in single_warnings[0] and "7 identities" in single_warnings[0]
    assert "labels 10, 11, 12, 13, 14 and 2 more" in single_warnings[0]


def test_folder_pairs_errors():
    with pytest.raises(UserError, match="at least 2 images per identity") as e:
        folder_pairs(_labels([3] * 5), num_folds=10, name="/data/small")  # 5 < 10 identities.
    assert "/data/small" in str(e.value) and "10 or more identities" in str(e.value)
    with pytest.raises(UserError, match="at least 2 images per identity"):
        folder_pairs(np.arange(50, dtype=np.int32), name="singles")  # No same pair at all.
    with pytest.raises(UserError, match="even pairs_per_fold"):
        folder_pairs(_labels([3] * 20), pairs_per_fold=7)
    with pytest.raises(UserError, match="num_folds >= 2"):
        folder_pairs(_labels([3] * 20), num_folds=1)
    with pytest.raises(UserError, match="without an identity"):
        folder_pairs(np.full(40, -1, np.int32), name="lfw")


def test_folder_pairs_on_a_folder(faces):
    source = IdentityFolderSource(faces[0])  # alice 2, bob 1, carol 3 images.
    pairs = folder_pairs(source.labels, num_folds=2, pairs_per_fold=2, name=source.path)
    _check_pairs(pairs, source.labels, 2)
    assert pairs[:, 2].sum() == 2  # One same pair per fold: alice's, and one of carol's.
