"""MOTChallenge folders, frame folders and videos, tracking results, and TrackingDecode."""

import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxvision import data
from jaxvision.data import mot_files
from jaxvision.data import moving_digits as md
from jaxvision.errors import UserError

_W, _H, _N = 64, 48, 6  # Image size and frames of each tiny sequence.

# MOT17-02: ids 1 (frames 1-6) and 2 (1-3), 3 (frame 6, partly outside), a
# distractor (class 8), a car (class 3) and a consider-0 pedestrian; rows out
# of frame order, as files may be.
_GT_02 = """\
2,1,13,21,20,10,1,1,0.8
1,2,31,1,10,20,1,1,1
1,1,11,21,20,10,1,1,0.9
3,5,1,1,10,10,0,8,0.5
3,1,15,21,20,10,1,1,0.7
2,2,32,1,10,20,1,1,1
3,2,33,1,10,20,1,1,0.6
4,6,1,1,10,10,0,3,1
4,1,17,21,20,10,1,1,1
5,7,1,1,10,10,0,1,1
5,1,19,21,20,10,1,1,1
6,1,21,21,20,10,1,1,1
6,3,51,31,20,20,1,1,0.3
"""
# MOT17-04: ids 4 (frames 1-6) and 9 (4-6).
_GT_04 = "".join(f"{f},4,1,1,8,16,1,1,1\n" for f in range(1, 7)) + "".join(
    f"{f},9,41,11,12,24,1,1,0.5\n" for f in range(4, 7))
# Public detections: MOT17's 10-column rows, and a 7-column one.
_DET_02 = """\
1,-1,11,21,20,10,0.9,-1,-1,-1
5,-1,2.5,3.5,10,12,0.25
4,-1,1,1,5,5,0.75,-1,-1,-1
"""


def _seqinfo(name: str) -> str:
    return (f"[Sequence]\nname={name}\nimDir=img1\nframeRate=30\nseqLength={_N}\n"
            f"imWidth={_W}\nimHeight={_H}\nimExt=.jpg\n")


def _grey(sequence: int, frame: int) -> int:
    """The grey level of a frame's image: distinct per sequence and frame."""
    return 20 * frame + 100 * sequence


def _write_sequence(folder: str, name: str, index: int, gt: str, det: str) -> None:
    os.makedirs(os.path.join(folder, "img1"))
    os.makedirs(os.path.join(folder, "gt"))
    os.makedirs(os.path.join(folder, "det"))
    for f in range(1, _N + 1):
        image = np.full((_H, _W, 3), _grey(index, f), np.uint8)
        Image.fromarray(image).save(os.path.join(folder, "img1", f"{f:06d}.jpg"), quality=95)
    with open(os.path.join(folder, "seqinfo.ini"), "w") as f:
        f.write(_seqinfo(name))
    with open(os.path.join(folder, "gt", "gt.txt"), "w") as f:
        f.write(gt)
    with open(os.path.join(folder, "det", "det.txt"), "w") as f:
        f.write(det)


@pytest.fixture(scope="module")
def mot_root(tmp_path_factory) -> str:
    """A data dir holding MOT17/train with two sequences, one also as a -DPM copy."""
    root = str(tmp_path_factory.mktemp("mot"))
    train = os.path.join(root, "MOT17", "train")
    _write_sequence(os.path.join(train, "MOT17-02-FRCNN"), "MOT17-02-FRCNN", 0, _GT_02, _DET_02)
    # The DPM copy: the same images and gt, its own detections.
    shutil.copytree(os.path.join(train, "MOT17-02-FRCNN"), os.path.join(train, "MOT17-02-DPM"))
    with open(os.path.join(train, "MOT17-02-DPM", "det", "det.txt"), "w") as f:
        f.write("1,-1,1,1,2,2,0.1,-1,-1,-1\n")
    _write_sequence(os.path.join(train, "MOT17-04-FRCNN"), "MOT17-04-FRCNN", 1, _GT_04,
                    "2,-1,1,1,8,16,0.5,-1,-1,-1\n")
    os.makedirs(os.path.join(train, "notes"))  # A folder without seqinfo.ini: not a sequence.
    return root


def _objects(record: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in record["objects"].items()}


def test_source_reads_each_sequence_once_in_the_moving_digits_layout(mot_root, caplog, tmp_path):
    # absl's own logger too: a test run before this one in the process may have
    # raised its level (the scripts' --verbosity), which caplog alone leaves in place.
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="absl"):
        source = mot_files.MOTSource(os.path.join(mot_root, "MOT17", "train"))
    assert source.sequences == ("MOT17-02-FRCNN", "MOT17-04-FRCNN")
    infos = [r.getMessage() for r in caplog.records if "per public detector" in r.getMessage()]
    assert len(infos) == 1 and "-FRCNN" in infos[0]
    assert len(source) == 2 * _N and source.num_identities == 5
    assert source.infos[0] == mot_files.SequenceInfo(
        "MOT17-02-FRCNN", "img1", 30.0, _N, _W, _H, ".jpg")
    record = source[2]  # MOT17-02, frame 3.
    features = md.MovingDigits(data_dir=str(tmp_path)).info.features
    assert set(record) == set(features)
    assert set(record["objects"]) == set(features["objects"].feature)
    assert (record["image/id"], record["sequence"], record["frame"]) == (2, 0, 3)
    assert record["image"].dtype == np.uint8 and record["image"].shape == (_H, _W, 3)
    assert abs(record["image"].mean() - _grey(0, 3)) < 2  # JPEG, nearly exact.
    objects = _objects(record)
    # Pedestrians 1 and 2, the distractor (5) as an ignore region; no car, no consider-0 row.
    np.testing.assert_array_equal(objects["track_id"], [1, 2, 5])
    np.testing.assert_array_equal(objects["identity"], [0, 1, -1])
    np.testing.assert_array_equal(objects["is_crowd"], [False, False, True])
    np.testing.assert_allclose(objects["visibility"], [0.7, 0.6, 0.0])
    np.testing.assert_array_equal(objects["label"], [0, 0, 0])
    np.testing.assert_array_equal(objects["digit"], [-1, -1, -1])
    # gt (x, y) = (15, 21) is 1-based: the box is x 14..34, y 20..30 in 0-based pixels.
    np.testing.assert_allclose(objects["bbox"][0], [20 / _H, 14 / _W, 30 / _H, 34 / _W])
    assert objects["bbox"].dtype == np.float32 and objects["visibility"].dtype == np.float32
    frame_6 = _objects(source[5])
    np.testing.assert_array_equal(frame_6["track_id"], [1, 3])
    np.testing.assert_allclose(frame_6["bbox"][1], [30 / _H, 50 / _W, 1.0, 1.0])  # Clipped.
    assert [len(_objects(source[i])["label"]) for i in range(6)] == [2, 2, 3, 1, 1, 2]
    second = _objects(source[_N + 4])  # MOT17-04, frame 5: ids 4 and 9.
    assert source[_N + 4]["sequence"] == 1 and source[_N + 4]["frame"] == 5
    np.testing.assert_array_equal(second["identity"], [3, 4])
    assert abs(source[_N + 4]["image"].mean() - _grey(1, 5)) < 2
    assert source[-1]["frame"] == _N
    with pytest.raises(IndexError):
        source[2 * _N]


def test_detector_copy_can_be_chosen(mot_root):
    source = mot_files.MOTSource(os.path.join(mot_root, "MOT17", "train"), detector="DPM")
    assert source.sequences == ("MOT17-02-DPM", "MOT17-04-FRCNN")
    dets = mot_files.public_detections(os.path.join(mot_root, "MOT17"), "train", "DPM")
    np.testing.assert_allclose(dets[0][1], [[0, 0, 2, 2]])


def test_half_splits_and_dataset_functions(mot_root):
    first = data.load_source("mot", "MOT17/train[:50%]", mot_root)
    second = data.load_source("mot", "MOT17/train[50%:]", mot_root)
    # 6 frames: ByteTrack's boundary is after frame 6 // 2 + 1 = 4.
    assert [first[i]["frame"] for i in range(len(first))] == [1, 2, 3, 4] * 2
    assert [second[i]["frame"] for i in range(len(second))] == [5, 6] * 2
    assert [second[i]["image/id"] for i in range(len(second))] == [0, 1, 2, 3]
    # Identities count the pedestrians of the selected frames only.
    assert first.num_identities == 4 and second.num_identities == 4
    np.testing.assert_array_equal(_objects(second[1])["identity"], [0, 1])  # ids 1 and 3.
    info = data.dataset_info("mot", mot_root, "MOT17/train")
    assert (info.num_classes, info.class_names) == (1, ("pedestrian",))
    assert info.is_detection and info.image_shape == (_H, _W, 3)
    assert info.num_examples == {"MOT17/train": 2 * _N}
    sequences = data.sequence_metadata("mot", "MOT17/train[50%:]", mot_root)
    assert sequences == [
        data.SequenceMetadata("MOT17-02-FRCNN", 2, 5, 30.0, _H, _W),
        data.SequenceMetadata("MOT17-04-FRCNN", 2, 5, 30.0, _H, _W),
    ]
    assert mot_files.frame_range(600, (0, 50)) == (1, 301)
    assert mot_files.frame_range(600, (50, 100)) == (302, 600)
    assert mot_files.parse_split("a/train[10%:60%]") == ("a/train", (10, 60))
    assert mot_files.parse_split("train") == ("train", (0, 100))
    with pytest.raises(UserError, match="0 <= start < end <= 100"):
        mot_files.parse_split("train[60%:10%]")
    with pytest.raises(UserError, match="PATH\\[P%:Q%\\]"):
        mot_files.parse_split("train[:50]")
    with pytest.raises(UserError, match="set config.data.path \\(or data_dir"):
        data.load_source("mot", "MOT17/train", None)
    with pytest.raises(UserError, match="no verification pairs"):
        data.verification_pairs("mot", "MOT17/train", mot_root)
    data.prepare("mot", mot_root)  # Nothing to prepare.


def test_public_detections_by_sequence_and_frame_range(mot_root):
    dets = mot_files.public_detections(os.path.join(mot_root, "MOT17"), "train[:50%]")
    assert sorted(dets) == [0, 1]
    frames, boxes, scores = dets[0]
    np.testing.assert_array_equal(frames, [1, 4])  # Frame 5 is in the other half.
    np.testing.assert_allclose(boxes, [[10, 20, 30, 30], [0, 0, 5, 5]])
    np.testing.assert_allclose(scores, [0.9, 0.75])
    frames, boxes, _ = mot_files.public_detections(os.path.join(mot_root, "MOT17"), "train")[0]
    np.testing.assert_array_equal(frames, [1, 4, 5])
    np.testing.assert_allclose(boxes[2], [1.5, 2.5, 11.5, 14.5])  # From the 7-column row.


def test_readers_name_the_file_and_line(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,1,1,5,5,1,1,1\n\n1,2,1,1,5,5,1,1\n")  # Line 3 has 8 fields.
    with pytest.raises(UserError) as e:
        mot_files.read_ground_truth(str(gt))
    message = str(e.value)
    assert f"{gt}, line 3: it has 8 fields" in message
    assert "frame,id,x,y,w,h,consider,class,visibility" in message and "\n" not in message
    gt.write_text("1,1,1,1,5,5,1,1,1\n1.5,2,1,1,5,5,1,1,1\n")
    with pytest.raises(UserError, match="line 2: its frame or id is not a whole number"):
        mot_files.read_ground_truth(str(gt))
    gt.write_text("1,1,a,1,5,5,1,1,1\n")
    with pytest.raises(UserError, match="line 1: it holds something that is not a number"):
        mot_files.read_ground_truth(str(gt))
    det = tmp_path / "det.txt"
    det.write_text("1,-1,1,1,5,5\n")
    with pytest.raises(UserError, match="line 1: it has 6 fields.*frame,-1,x,y,w,h,score"):
        mot_files.read_detections(str(det))
    with pytest.raises(UserError, match="Cannot read .*missing.txt"):
        mot_files.read_ground_truth(str(tmp_path / "missing.txt"))
    (tmp_path / "seq").mkdir()
    (tmp_path / "seq" / "seqinfo.ini").write_text(_seqinfo("s").replace("seqLength=6\n", ""))
    with pytest.raises(UserError, match="lacks seqLength"):
        mot_files.read_seqinfo(str(tmp_path / "seq"))
    (tmp_path / "seq" / "seqinfo.ini").write_text(_seqinfo("s").replace("=64", "=wide"))
    with pytest.raises(UserError, match="imWidth is 'wide'"):
        mot_files.read_seqinfo(str(tmp_path / "seq"))
    with pytest.raises(UserError, match="needs a seqinfo.ini"):
        mot_files.read_seqinfo(str(tmp_path))


def test_missing_frame_image_names_the_file(mot_root, tmp_path):
    root = tmp_path / "train"
    shutil.copytree(os.path.join(mot_root, "MOT17", "train", "MOT17-04-FRCNN"),
                    root / "MOT17-04-FRCNN")
    os.remove(root / "MOT17-04-FRCNN" / "img1" / "000003.jpg")
    source = mot_files.MOTSource(str(root))
    source[1]  # Frame 2 reads.
    with pytest.raises(UserError, match="MOT17-04-FRCNN/img1/000003.jpg"):
        source[2]
    with pytest.raises(UserError, match="no sequence folder with a seqinfo.ini"):
        mot_files.MOTSource(str(tmp_path / "train" / "MOT17-04-FRCNN" / "img1"))
    os.remove(root / "MOT17-04-FRCNN" / "gt" / "gt.txt")  # A test split: no objects.
    assert mot_files.MOTSource(str(root)).num_identities == 0
    assert len(_objects(mot_files.MOTSource(str(root))[0])["label"]) == 0


def _save(folder, name: str, grey: int) -> None:
    Image.fromarray(np.full((8, 10, 3), grey, np.uint8)).save(os.path.join(folder, name))


def test_frame_folder_gaps_and_bad_frames_give_none(tmp_path, caplog):
    for number, grey in ((1, 10), (2, 20), (4, 40), (6, 60), (10, 100)):
        _save(tmp_path, f"{number:06d}.{'png' if number == 2 else 'jpg'}", grey)
    (tmp_path / "000005.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        frames = list(mot_files.read_frames(str(tmp_path)))
    assert [f for f, _, _ in frames] == list(range(1, 11))
    assert [name for _, _, name in frames][:6] == [
        "000001.jpg", "000002.png", "000003.jpg", "000004.jpg", "000005.jpg", "000006.jpg"]
    assert frames[7][2] == "000008.jpg"
    missing = [f for f, image, _ in frames if image is None]
    assert missing == [3, 5, 7, 8, 9]
    assert frames[3][1].shape == (8, 10, 3) and abs(frames[3][1].mean() - 40) < 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # Frame 3, frame 5 (unreadable), frames 7..9.
    assert "frame 3" in warnings[0] and "frames 7..9" in warnings[2]
    assert "000005.jpg" in warnings[1]


def test_frame_folder_numbering(tmp_path):
    zero_based = tmp_path / "zero"
    zero_based.mkdir()
    for number in (0, 1, 2, 10):
        _save(zero_based, f"img_{number}.bmp", number)
    frames = list(mot_files.read_frames(str(zero_based)))
    assert [(f, name) for f, image, name in frames if image is not None] == [
        (1, "img_0.bmp"), (2, "img_1.bmp"), (3, "img_2.bmp"), (11, "img_10.bmp")]
    assert frames[3][2] == "img_3.bmp"
    named = tmp_path / "named"
    named.mkdir()
    for name in ("b.jpg", "a.jpg", "c.PNG"):
        _save(named, name, 50)
    assert [(f, name) for f, _, name in mot_files.read_frames(str(named))] == [
        (1, "a.jpg"), (2, "b.jpg"), (3, "c.PNG")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        mot_files.read_frames(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="neither a folder of images nor a video"):
        mot_files.read_frames(str(tmp_path / "nothing.mp4"))


def test_videos_and_gifs_are_read_and_bad_ones_raise(tmp_path):
    import imageio.v3 as iio

    frames = np.stack([np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)])
    iio.imwrite(tmp_path / "clip.mp4", frames, fps=10)
    read = list(mot_files.read_frames(str(tmp_path / "clip.mp4")))
    assert [n for n, _, _ in read] == [1, 2, 3, 4, 5]
    assert read[0][2] == "clip.mp4#000001"
    for (_, image, _), expected in zip(read, frames, strict=True):
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        assert abs(image.astype(float).mean() - expected.mean()) < 4
    gif = [Image.fromarray(f) for f in frames]
    gif[0].save(tmp_path / "clip.gif", save_all=True, append_images=gif[1:])
    read = list(mot_files.read_frames(str(tmp_path / "clip.gif")))
    assert len(read) == 5 and read[2][1].shape == (48, 64, 3)
    assert abs(read[2][1].mean() - 80) < 2
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(UserError, match="Cannot read video .*broken.mp4.*cannot be opened"):
        list(mot_files.read_frames(str(tmp_path / "broken.mp4")))


def test_results_round_trip_sorted_by_frame_then_id(tmp_path):
    path = str(tmp_path / "MOT17-02-FRCNN.txt")
    frames = np.array([2, 1, 2, 1])
    ids = np.array([3, 7, 1, 2])
    boxes = np.array([[10.5, 20.25, 30.5, 60.75], [0, 0, 5, 5], [1, 2, 3, 4], [-3.5, 7, 12, 9]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    mot_files.write_mot_results(path, frames, ids, boxes, scores)
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0] == "1,2,-2.50,8.00,15.50,2.00,0.6000,-1,-1,-1"
    results = mot_files.read_mot_results(path)
    order = [3, 1, 2, 0]  # (1, 2), (1, 7), (2, 1), (2, 3).
    np.testing.assert_array_equal(results.frames, frames[order])
    np.testing.assert_array_equal(results.ids, ids[order])
    np.testing.assert_allclose(results.boxes, boxes[order], atol=0.005)
    np.testing.assert_allclose(results.scores, scores[order], atol=5e-5)
    with pytest.raises(ValueError, match="one row per box"):
        mot_files.write_mot_results(path, frames, ids[:3], boxes, scores)
    with pytest.raises(UserError, match="Cannot write tracking results"):
        mot_files.write_mot_results(str(tmp_path / "no" / "x.txt"), frames, ids, boxes, scores)


def test_tracking_decode_keeps_track_fields_in_sync_with_kept_boxes(mot_root):
    source = mot_files.MOTSource(os.path.join(mot_root, "MOT17", "train"))
    record = source[2]  # Ids 1, 2 and the ignore region 5.
    objects = dict(record["objects"])
    # A degenerate box (no width) in the middle is dropped with its fields.
    objects = {k: np.insert(v, 1, v[0], axis=0) for k, v in objects.items()}
    objects["bbox"][1] = [0.1, 0.5, 0.2, 0.5]
    objects["track_id"][1], objects["identity"][1], objects["visibility"][1] = 99, 4, 0.5
    decode = data.TrackingDecode(32, max_boxes=5, num_identities=source.num_identities)
    example = decode({**record, "objects": objects})
    np.testing.assert_array_equal(example["box_mask"], [True] * 3 + [False] * 2)
    np.testing.assert_array_equal(example["track_ids"], [1, 2, 5, 0, 0])
    np.testing.assert_array_equal(example["identities"], [0, 1, -1, -1, -1])
    np.testing.assert_allclose(example["visibility"], [0.7, 0.6, 0, 0, 0])
    np.testing.assert_array_equal(example["crowd"], [False, False, True, False, False])
    assert (example["sequence"], example["frame"]) == (0, 3)
    # The detection outputs are DetectionDecode's own.
    plain = data.DetectionDecode(32, max_boxes=5)({**record, "objects": objects})
    for key, value in plain.items():
        np.testing.assert_array_equal(example[key], value)
    with pytest.raises(UserError, match="identity 1, but config.model.num_identities=1; "
                                        "raise config.model.num_identities to at least 2"):
        data.TrackingDecode(32, max_boxes=5, num_identities=1)(record)
