"""Inputs (images, folders, lists, videos) and outputs (JSON, rendering, images, video)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.io import sources
from alphapose_trt.io.render import draw_persons
from alphapose_trt.io.sinks import (
    COCO_ID_MAP_FILE,
    RESULTS_FILE,
    AlphaPoseJsonWriter,
    AsyncSink,
    FrameOutputs,
    ImageWriter,
    VideoWriter,
)
from alphapose_trt.io.sources import Frame, natural_sort_key, open_source
from alphapose_trt.results import FrameResult, Person
from alphapose_trt.skeleton import COCO_LIMB_COLORS, COCO_LIMBS

VIDEO_SIZE = (64, 48)  # width, height
VIDEO_FRAMES = 10
VIDEO_FPS = 10.0
# MJPG at quality ~95 on flat frames: decoded values stay within a few levels.
VIDEO_TOLERANCE = 4


def _save(path: Path, array: np.ndarray) -> Path:
    """Encode with OpenCV (BGR order, any depth) through tofile so non-ASCII names work."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, array)
    assert ok
    encoded.tofile(str(path))
    return path


def _flat(value: int, shape: tuple[int, ...] = (6, 8, 3), dtype=np.uint8) -> np.ndarray:
    return np.full(shape, value, dtype=dtype)


def _frames(source: sources.Source) -> list[Frame]:
    with source:
        return list(source)


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("reader:") and t.is_alive()]


def _person(offset: float = 0.0, score: float = 0.9, idx: int = 0) -> Person:
    rng = np.random.default_rng(int(offset) + idx)
    keypoints = rng.uniform(10, 50, size=(17, 2)).astype(np.float32) + offset
    scores = rng.uniform(0.3, 1.0, size=17).astype(np.float32)
    return Person(box=np.array([5.0, 6.0, 40.0, 50.0], np.float32), box_score=0.8,
                  keypoints=keypoints, keypoint_scores=scores, score=score, idx=idx)


# --------------------------------------------------------------------------- image sources


def test_natural_sort_key_orders_numbers_by_value():
    names = ["img10.png", "img2.png", "Img3.png", "img1.png", "a/img2.png", "img02.png"]
    assert sorted(names, key=natural_sort_key) == [
        "a/img2.png", "img1.png", "img02.png", "img2.png", "Img3.png", "img10.png"]


def test_indir_is_recursive_natural_sorted_and_handles_non_ascii(tmp_path):
    values = {"img10.png": 10, "img2.png": 2, "sub/img1.jpg": 100, "sub/deeper/ß图.png": 200}
    for name, value in values.items():
        _save(tmp_path / name, _flat(value))
    (tmp_path / "notes.txt").write_text("not an image")

    source = open_source(indir=tmp_path, queue_size=1)
    assert len(source) == 4 and source.fps is None and source.size is None
    frames = _frames(source)

    assert [f.image_id for f in frames] == ["img2.png", "img10.png", "sub/deeper/ß图.png", "sub/img1.jpg"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    for frame in frames:
        assert frame.image.dtype == np.uint8 and frame.image.shape == (6, 8, 3)
        assert abs(int(frame.image.mean()) - values[frame.image_id]) <= 2  # jpg is lossy
        assert frame.path == tmp_path / frame.image_id
    assert source.failures == []


def test_list_file_keeps_order_skips_comments_and_resolves_relative_to_list(tmp_path):
    _save(tmp_path / "data" / "imgs" / "b.png", _flat(1))
    _save(tmp_path / "data" / "a.png", _flat(2))
    _save(tmp_path / "outside" / "c.png", _flat(3))
    list_file = tmp_path / "data" / "list.txt"
    list_file.write_text("# my images\n\nimgs/b.png\n   a.png  \n../outside/c.png\n")

    frames = _frames(open_source(list_file=list_file))

    assert [f.image_id for f in frames] == ["imgs/b.png", "a.png", "c.png"]
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 3]


def test_image_formats_convert_to_rgb_and_corrupt_files_are_recorded(tmp_path, caplog):
    from PIL import Image

    _save(tmp_path / "1_gray.png", _flat(77, (4, 5)))
    _save(tmp_path / "2_bgra.png", np.broadcast_to(np.array([10, 20, 30, 0], np.uint8), (4, 5, 4)).copy())
    _save(tmp_path / "3_color16.png", np.broadcast_to(np.array([65535, 64378, 0], np.uint16), (4, 5, 3)).copy())
    # 64378 / 257 rounds to 250; the 8-bit shift OpenCV uses by default would give 251.
    _save(tmp_path / "4_gray16.tif", _flat(64378, (4, 5), np.uint16))
    palette = Image.new("P", (5, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(tmp_path / "5_palette.png")
    (tmp_path / "6_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 4)
    (tmp_path / "7_empty.png").write_bytes(b"")
    _save(tmp_path / "8_ok.png", _flat(9, (4, 5, 3)))
    truncated = (tmp_path / "8_ok.png").read_bytes()[:30]
    (tmp_path / "9_truncated.png").write_bytes(truncated)

    with caplog.at_level(logging.WARNING, logger="alphapose_trt.io.sources"):
        source = open_source(indir=tmp_path)
        frames = {f.image_id: f.image for f in _frames(source)}

    expected = {"1_gray.png": (77, 77, 77), "2_bgra.png": (30, 20, 10),
                "3_color16.png": (0, 250, 255), "4_gray16.tif": (250, 250, 250),
                "5_palette.png": (200, 100, 50), "8_ok.png": (9, 9, 9)}
    assert set(frames) == set(expected)
    for name, rgb in expected.items():
        assert frames[name].dtype == np.uint8 and frames[name].shape == (4, 5, 3), name
        assert np.all(frames[name] == np.array(rgb, np.uint8)), name
    failed = {Path(what).name: why for what, why in source.failures}
    assert set(failed) == {"6_corrupt.jpg", "7_empty.png", "9_truncated.png"}
    assert "empty" in failed["7_empty.png"]
    assert all("\n" not in why for why in failed.values())
    assert "6_corrupt.jpg" in caplog.text


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (8, 4), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "rotated.jpg", exif=exif)
    (frame,) = _frames(open_source(image=tmp_path / "rotated.jpg"))
    assert frame.image.shape == (8, 4, 3)
    assert frame.image_id == "rotated.jpg"


def test_very_large_image_is_processed_with_a_warning(tmp_path, caplog):
    _save(tmp_path / "wide.png", _flat(5, (1, sources.LARGE_IMAGE_SIDE + 1)))
    with caplog.at_level(logging.WARNING, logger="alphapose_trt.io.sources"):
        (frame,) = _frames(open_source(image=tmp_path / "wide.png"))
    assert frame.image.shape == (1, sources.LARGE_IMAGE_SIDE + 1, 3)
    assert "very large" in caplog.text


@pytest.mark.parametrize("kwargs_of, needle", [
    (lambda d: {"image": d / "missing.jpg"}, "missing.jpg"),
    (lambda d: {"image": d}, "is a folder"),
    (lambda d: {"indir": d / "nope"}, "nope"),
    (lambda d: {"indir": d / "empty"}, "no images found"),
    (lambda d: {"list_file": d / "missing.txt"}, "missing.txt"),
    (lambda d: {"list_file": d / "comments.txt"}, "lists no images"),
    (lambda d: {"video": d / "missing.mp4"}, "missing.mp4"),
    (lambda d: {}, "got none"),
    (lambda d: {"image": d / "a.png", "webcam": 0}, "--image, --webcam"),
    (lambda d: {"webcam": -1}, "camera index"),
    (lambda d: {"indir": d, "queue_size": 0}, "at least 1"),
    (lambda d: {"indir": d, "decoder": "nvdec"}, "--decoder nvdec reads video files"),
    (lambda d: {"webcam": 0, "decoder": "pyav"}, "--decoder pyav reads video files"),
    (lambda d: {"video": d / "missing.mp4", "decoder": "ffmpeg"}, "--decoder must be one of opencv, pyav, nvdec"),
    (lambda d: {"video": d / "missing.mp4", "decoder": "nvdec"}, "missing.mp4: no such video file"),
    (lambda d: {"video": d / "missing.mp4", "decoder": "pyav"}, "missing.mp4: no such video file"),
])
def test_bad_inputs_raise_clear_errors(tmp_path, kwargs_of, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    (tmp_path / "comments.txt").write_text("# nothing\n\n")
    with pytest.raises(AlphaPoseTrtError, match=needle) as info:
        open_source(**kwargs_of(tmp_path))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- video sources


@pytest.fixture(scope="module")
def small_video(tmp_path_factory) -> Path:
    """10 flat frames of increasing brightness, 64x48, 10 fps, MJPG."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    return _write_mjpg(path, (_flat(20 * i, (VIDEO_SIZE[1], VIDEO_SIZE[0], 3)) for i in range(VIDEO_FRAMES)))


def _write_mjpg(path: Path, frames) -> Path:
    """An MJPG clip of VIDEO_SIZE at VIDEO_FPS holding the given BGR frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, VIDEO_SIZE)
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_video_frames_come_in_order_with_count_fps_and_size(small_video):
    source = open_source(video=small_video, queue_size=2)
    assert len(source) == VIDEO_FRAMES
    assert source.fps == pytest.approx(VIDEO_FPS)
    assert source.size == VIDEO_SIZE
    frames = _frames(source)
    assert [f.image_id for f in frames] == list(range(VIDEO_FRAMES))
    assert [f.index for f in frames] == list(range(VIDEO_FRAMES))
    for frame in frames:
        assert frame.image.shape == (VIDEO_SIZE[1], VIDEO_SIZE[0], 3) and frame.image.dtype == np.uint8
        assert abs(frame.image.mean() - 20 * frame.image_id) <= VIDEO_TOLERANCE
        assert frame.path == small_video
    assert source.failures == []


def test_close_stops_the_reader_and_a_new_pass_starts_over(small_video):
    source = open_source(video=small_video, queue_size=1)
    frames = iter(source)
    assert next(frames).image_id == 0 and _reader_threads()
    source.close()
    assert _reader_threads() == []
    assert [f.image_id for f in source] == list(range(VIDEO_FRAMES))
    source.close()
    assert _reader_threads() == []


def test_video_that_cannot_be_opened_names_the_file(tmp_path):
    bad = tmp_path / "not_a_video.avi"
    bad.write_text("hello")
    with pytest.raises(AlphaPoseTrtError, match="not_a_video.avi"):
        open_source(video=bad)


class _FakeCapture:
    """cv2.VideoCapture stand-in: `frames` grabbable frames, some failing to decode."""

    def __init__(self, frames: int, bad: set[int], reported: int):
        self.frames, self.bad, self.reported, self.position = frames, bad, reported, -1

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_WIDTH: 4.0,
                cv2.CAP_PROP_FRAME_HEIGHT: 2.0, cv2.CAP_PROP_FRAME_COUNT: float(self.reported)}[prop]

    def grab(self) -> bool:
        self.position += 1
        return self.position < self.frames

    def retrieve(self):
        if self.position in self.bad:
            return False, None
        return True, np.full((2, 4, 3), self.position, np.uint8)

    def release(self) -> None:
        pass


@pytest.mark.parametrize("frames, bad, reported, max_failures, want_ids, want_failed, stopped", [
    # frame 2 does not decode; reads fail for frames 6-7 although 8 were reported
    (6, {2}, 8, 25, [0, 1, 3, 4, 5],
     [("frame 2", "decoded"), ("frame 6", "reported end"), ("frame 7", "reported end")], False),
    # decoding breaks for good from frame 3: give up after 4 in a row
    (100, set(range(3, 100)), 100, 4, [0, 1, 2], [(f"frame {i}", "decoded") for i in range(3, 7)], True),
    # no reported count (a live stream): a failed read is simply the end
    (3, set(), 0, 25, [0, 1, 2], [], False),
])
def test_undecodable_video_frames_are_recorded(tmp_path, monkeypatch, frames, bad, reported,
                                                max_failures, want_ids, want_failed, stopped):
    video = tmp_path / "fake.mp4"
    video.write_bytes(b"x")
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda target: _FakeCapture(frames, bad, reported))
    source = open_source(video=video, max_consecutive_failures=max_failures)
    got = _frames(source)
    assert [f.image_id for f in got] == want_ids
    assert [int(f.image[0, 0, 0]) for f in got] == want_ids
    assert [f.index for f in got] == list(range(len(want_ids)))
    for (what, why), (label, reason) in zip(source.failures, want_failed):
        assert what.endswith(label) and reason in why
    assert len(source.failures) == len(want_failed) + stopped
    assert any("in a row" in why for _, why in source.failures) == stopped


# --------------------------------------------------------------------------- conversion pool

ORDER_FRAMES = 40
# Frame i is gray 6*i on its left half: MJPG keeps flat gray within VIDEO_TOLERANCE < 6, so the
# number reads back unambiguously; the right half is a fixed colour that shows a channel swap.
ORDER_STEP = 6
ORDER_COLOR_BGR = (200, 120, 30)


def _numbered(i: int, size: tuple[int, int] = VIDEO_SIZE) -> np.ndarray:
    width, height = size
    image = np.empty((height, width, 3), np.uint8)
    image[:, : width // 2] = ORDER_STEP * i
    image[:, width // 2:] = ORDER_COLOR_BGR
    return image


def _frame_number(rgb: np.ndarray) -> int:
    return round(float(rgb[:, : rgb.shape[1] // 2].mean()) / ORDER_STEP)


def _pool_threads() -> list[threading.Thread]:
    return [t for t in _reader_threads() if ":convert" in t.name]


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory) -> Path:
    """40 frames of 64x48, MJPG, each carrying its frame number in its pixel values."""
    path = tmp_path_factory.mktemp("numbered") / "numbered.avi"
    return _write_mjpg(path, (_numbered(i) for i in range(ORDER_FRAMES)))


def _reference_decode(path: Path) -> list[np.ndarray]:
    """The slow reference: a plain read loop converting each frame on the calling thread."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_video_frames_converted_on_the_pool_stay_in_order_and_exact(numbered_video):
    expected = _reference_decode(numbered_video)
    assert len(expected) == ORDER_FRAMES

    source = open_source(video=numbered_video, queue_size=3)
    frames = _frames(source)

    assert [f.image_id for f in frames] == list(range(ORDER_FRAMES))
    assert [f.index for f in frames] == list(range(ORDER_FRAMES))
    assert [_frame_number(f.image) for f in frames] == list(range(ORDER_FRAMES))
    for frame, reference in zip(frames, expected):
        assert frame.image.dtype == np.uint8 and np.array_equal(frame.image, reference), frame.image_id
    assert source.failures == [] and _reader_threads() == []


def test_folder_read_on_the_pool_keeps_order_and_skips_a_corrupt_image(tmp_path):
    rng = np.random.default_rng(0)
    count, corrupt = 12, 5
    for i in range(count):
        if i == corrupt:
            (tmp_path / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken in the middle")
        else:
            noisy = _numbered(i, (16, 8)) | rng.integers(0, 2, (8, 16, 3), np.uint8)  # exactness
            _save(tmp_path / f"img{i}.png", noisy)
    kept = [i for i in range(count) if i != corrupt]

    source = open_source(indir=tmp_path, queue_size=2)
    frames = _frames(source)

    assert [f.image_id for f in frames] == [f"img{i}.png" for i in kept]
    assert [f.index for f in frames] == list(range(len(kept)))
    for frame in frames:
        reference = cv2.cvtColor(cv2.imread(str(frame.path)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(frame.image, reference), frame.image_id
    assert [Path(what).name for what, _ in source.failures] == [f"img{corrupt}.png"]
    assert _reader_threads() == []


def test_early_stop_ends_the_reader_and_its_pool(numbered_video):
    source = open_source(video=numbered_video, queue_size=4)
    taken = []
    for frame in source:
        taken.append(frame.image_id)
        assert _pool_threads() and len(_pool_threads()) <= sources.CONVERT_WORKERS
        if len(taken) == 3:
            break
    source.close()
    assert taken == [0, 1, 2]
    assert _reader_threads() == []


def test_close_from_another_thread_ends_the_pass_quietly(numbered_video):
    source = open_source(video=numbered_video, queue_size=4)
    frames = iter(source)
    assert next(frames).image_id == 0
    closer = threading.Thread(target=source.close)
    closer.start()
    closer.join()
    rest = [f.image_id for f in frames]  # frames converted before the close may still come
    assert rest == list(range(1, 1 + len(rest))) and len(rest) < ORDER_FRAMES - 1
    assert _reader_threads() == []


def _wait_until(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_pending_frames_count_against_the_queue_size(tmp_path, monkeypatch):
    video = tmp_path / "long.mp4"
    video.write_bytes(b"x")
    capture = _FakeCapture(1000, set(), 1000)
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda target: capture)
    queue_size = 2
    with open_source(video=video, queue_size=queue_size) as source:
        frames = iter(source)
        assert next(frames).image_id == 0
        # Frame 0 was taken, `queue_size` wait in the queue, one more waits to be put.
        most_ahead = queue_size + 1
        assert _wait_until(lambda: capture.position >= most_ahead)
        time.sleep(0.2)
        assert capture.position == most_ahead
        frames.close()


def test_stopping_early_does_not_wait_for_a_reader_blocked_on_a_full_queue(tmp_path, monkeypatch):
    """A consumer that stops at a frame limit finds the reader waiting for room in the queue;
    stopping empties the queue so the reader ends at once, not at its next poll (here an hour)."""
    video = tmp_path / "long.mp4"
    video.write_bytes(b"x")
    capture = _FakeCapture(1000, set(), 1000)
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda target: capture)
    monkeypatch.setattr(sources, "_POLL_S", 3600.0)
    monkeypatch.setattr(sources, "_JOIN_TIMEOUT_S", 2.0)
    with open_source(video=video, queue_size=2) as source:
        frames = iter(source)
        assert next(frames).image_id == 0
        assert _wait_until(lambda: capture.position >= 3)  # the queue is full, the reader waits
        start = time.monotonic()
        frames.close()
        assert time.monotonic() - start < 1.0 and _reader_threads() == []


class _BrokenCapture(_FakeCapture):
    """Grabbing frame `at` raises (a decoder crash) or retrieving it gives float samples."""

    def __init__(self, at: int, how: str):
        super().__init__(frames=10, bad=set(), reported=10)
        self.at, self.how = at, how

    def grab(self) -> bool:
        if self.how == "grab" and self.position + 1 == self.at:
            raise RuntimeError("decoder crashed")
        return super().grab()

    def retrieve(self):
        ok, image = super().retrieve()
        if self.how == "float" and self.position == self.at:
            image = image.astype(np.float32)
        return ok, image


@pytest.mark.parametrize("how, error, needle", [
    ("grab", RuntimeError, "decoder crashed"),
    ("float", AlphaPoseTrtError, "unsupported sample type float32"),
])
def test_video_errors_reach_the_consumer_after_the_frames_before_them(tmp_path, monkeypatch, how,
                                                                      error, needle):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"x")
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda target: _BrokenCapture(4, how))
    taken = []
    with open_source(video=video, queue_size=2) as source:
        with pytest.raises(error, match=needle):
            for frame in source:
                taken.append(int(frame.image[0, 0, 0]))
    assert taken == [0, 1, 2, 3] and source.failures == []
    assert _reader_threads() == []


# --------------------------------------------------------------------------- JSON sinks


def _no_temp_files(folder: Path) -> bool:
    return not list(folder.rglob("*.tmp"))


def test_alphapose_json_schema_and_values(tmp_path):
    people = [_person(0, score=2.5, idx=0), _person(30, score=1.5, idx=1)]
    with AlphaPoseJsonWriter(tmp_path) as writer:
        writer.write(FrameResult("sub/a.jpg", people, 48, 64))
        writer.write(FrameResult("b.jpg", [], 48, 64))
        writer.write(FrameResult(np.int64(7), [_person(5)], 48, 64))

    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert len(results) == 3 and _no_temp_files(tmp_path)
    for entry, person, image_id in zip(results, people + [_person(5)], ["sub/a.jpg", "sub/a.jpg", 7]):
        assert set(entry) == {"image_id", "category_id", "keypoints", "score", "box", "idx"}
        assert entry["image_id"] == image_id and entry["category_id"] == 1
        triples = np.array(entry["keypoints"]).reshape(17, 3)
        np.testing.assert_allclose(triples[:, :2], person.keypoints, rtol=1e-6)
        np.testing.assert_allclose(triples[:, 2], person.keypoint_scores, rtol=1e-6)
        np.testing.assert_allclose(entry["box"], person.box, rtol=1e-6)
        assert entry["score"] == pytest.approx(person.score) and entry["idx"] == person.idx


def test_coco_json_uses_integer_ids_with_a_mapping(tmp_path):
    with AlphaPoseJsonWriter(tmp_path, format="coco") as writer:
        for name in ["cat.jpg", "1.jpg", "000000397133.jpg", "cat.jpg"]:
            writer.write(FrameResult(name, [_person()]))

    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert [r["image_id"] for r in results] == [1, 2, 397133, 1]
    assert all(set(r) == {"image_id", "category_id", "keypoints", "score"} for r in results)
    mapping = json.loads((tmp_path / COCO_ID_MAP_FILE).read_text())
    assert mapping == {"cat.jpg": 1, "1.jpg": 2, "000000397133.jpg": 397133}


def test_openpose_json_has_18_joints_with_neck_from_shoulders(tmp_path):
    person = _person()
    with AlphaPoseJsonWriter(tmp_path, format="openpose") as writer:
        writer.write(FrameResult("sub/img1.png", [person, _person(10)]))
        writer.write(FrameResult(7, []))

    data = json.loads((tmp_path / "sub" / "img1_keypoints.json").read_text())
    assert data["version"] == 1.3 and len(data["people"]) == 2
    pose = np.array(data["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    np.testing.assert_allclose(pose[1, :2], person.keypoints[[5, 6]].mean(axis=0), rtol=1e-6)
    assert pose[1, 2] == pytest.approx(person.keypoint_scores[[5, 6]].min())
    np.testing.assert_allclose(pose[0], [*person.keypoints[0], person.keypoint_scores[0]], rtol=1e-6)
    np.testing.assert_allclose(pose[2], [*person.keypoints[6], person.keypoint_scores[6]], rtol=1e-6)
    np.testing.assert_allclose(pose[17], [*person.keypoints[3], person.keypoint_scores[3]], rtol=1e-6)
    empty = json.loads((tmp_path / "000000000007_keypoints.json").read_text())
    assert empty["people"] == []
    assert _no_temp_files(tmp_path)


def test_json_is_flushed_mid_run_and_survives_an_exception(tmp_path):
    path = tmp_path / RESULTS_FILE
    with pytest.raises(KeyboardInterrupt):
        with AlphaPoseJsonWriter(tmp_path, flush_every=2, flush_seconds=None) as writer:
            writer.write(FrameResult("a.jpg", [_person()]))
            assert not path.exists()
            writer.write(FrameResult("b.jpg", [_person(), _person(20)]))
            assert len(json.loads(path.read_text())) == 3
            writer.write(FrameResult("c.jpg", [_person()]))
            assert len(json.loads(path.read_text())) == 3  # not yet flushed, still valid
            raise KeyboardInterrupt
    assert [r["image_id"] for r in json.loads(path.read_text())] == ["a.jpg", "b.jpg", "b.jpg", "c.jpg"]
    assert _no_temp_files(tmp_path)


def test_json_writer_rejects_unknown_format_and_non_finite_values(tmp_path):
    with pytest.raises(AlphaPoseTrtError, match="openpose"):
        AlphaPoseJsonWriter(tmp_path, format="yaml")
    bad = _person()
    bad.keypoints[3, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        AlphaPoseJsonWriter(tmp_path).write(FrameResult("x.jpg", [bad]))


# --------------------------------------------------------------------------- rendering


def _bgr_to_rgb(color: tuple[int, int, int]) -> np.ndarray:
    return np.array(color[::-1], np.uint8)


def test_draw_persons_draws_in_rgb_and_leaves_input_untouched():
    image = np.full((120, 160, 3), 40, np.uint8)
    original = image.copy()
    person = _person(20)
    person.keypoints = np.array([[20 + 7 * j, 20 + 5 * j] for j in range(17)], np.float32)

    drawn = draw_persons(image, [person])

    assert np.array_equal(image, original)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn != image).any(axis=2).sum() > 200
    # Left wrist (9): drawn last in its left-side colour, exact at the dot centre.
    (limb_index,) = [i for i, limb in enumerate(COCO_LIMBS) if 9 in limb]
    x, y = person.keypoints[9].astype(int)
    assert np.array_equal(drawn[y, x], _bgr_to_rgb(COCO_LIMB_COLORS[limb_index]))


def test_draw_persons_respects_threshold_and_box_option():
    image = np.zeros((60, 80, 3), np.uint8)
    person = _person()
    person.keypoint_scores[:] = 0.01
    assert np.array_equal(draw_persons(image, [person], kp_threshold=0.05), image)

    boxed = draw_persons(image, [person], show_box=True)
    x, y, w, h = person.box.astype(int)
    assert boxed[y, x + w // 2].any() and boxed[y + h // 2, x + w // 2].sum() == 0
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_persons(image.astype(np.float32), [person])


# --------------------------------------------------------------------------- image and video sinks


def test_image_writer_keeps_relative_names(tmp_path):
    writer = ImageWriter(tmp_path)
    picture = np.zeros((4, 6, 3), np.uint8)
    picture[..., 0] = 200  # red in RGB
    saved = [writer.write("sub/a.png", picture), writer.write("b.bmp", picture),
             writer.write(3, picture), writer.write("../escape.png", picture)]
    assert saved == [tmp_path / "vis" / "sub" / "a.png", tmp_path / "vis" / "b.bmp.jpg",
                     tmp_path / "vis" / "000000000003.jpg", tmp_path / "vis" / "escape.png"]
    assert all(p.is_file() for p in saved) and _no_temp_files(tmp_path)
    back = sources.read_image(saved[0])
    assert np.array_equal(back, picture)


def test_video_writer_output_keeps_fps_and_size(tmp_path):
    path = tmp_path / "out" / "vis.mp4"
    width, height = VIDEO_SIZE
    with VideoWriter(path, fps=12.0, size=VIDEO_SIZE) as writer:
        for i in range(5):
            writer.write(_flat(40 * i, (height, width, 3)))
        with pytest.raises(ValueError, match="64x48"):
            writer.write(_flat(0, (10, 10, 3)))

    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == VIDEO_SIZE
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 5


def test_video_writer_that_cannot_open_raises(tmp_path):
    with pytest.raises(AlphaPoseTrtError, match="out.xyz"):
        VideoWriter(tmp_path / "out.xyz", fps=10.0, size=VIDEO_SIZE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(AlphaPoseTrtError, match="cannot create"):
        VideoWriter(tmp_path / "file" / "out.mp4", fps=10.0, size=VIDEO_SIZE)
    with pytest.raises(AlphaPoseTrtError, match="fps"):
        VideoWriter(tmp_path / "ok.mp4", fps=0.0, size=VIDEO_SIZE)


class _FailingSink:
    def __init__(self, fail_at: int):
        self.fail_at, self.written, self.closed = fail_at, [], False

    def write(self, item: int) -> None:
        if item == self.fail_at:
            raise RuntimeError(f"disk full at {item}")
        self.written.append(item)

    def close(self) -> None:
        self.closed = True


def test_async_sink_keeps_order_and_reraises_thread_errors():
    ok = _FailingSink(fail_at=-1)
    with AsyncSink(ok, queue_size=2) as sink:
        for i in range(20):
            sink.write(i)
    assert ok.written == list(range(20)) and ok.closed

    failing = _FailingSink(fail_at=3)
    sink = AsyncSink(failing, queue_size=2)
    for i in range(6):
        try:
            sink.write(i)
        except RuntimeError:
            break
    with pytest.raises(RuntimeError, match="disk full at 3"):
        sink.close()
    assert failing.written == [0, 1, 2] and failing.closed


def test_frame_outputs_through_async_sink_write_json_and_render(tmp_path):
    image = np.full((48, 64, 3), 30, np.uint8)
    outputs = FrameOutputs(AlphaPoseJsonWriter(tmp_path), ImageWriter(tmp_path), show_box=True)
    with AsyncSink(outputs) as sink:
        sink.write(Frame("a.png", image), FrameResult("a.png", [_person()], 48, 64))
    assert len(json.loads((tmp_path / RESULTS_FILE).read_text())) == 1
    rendered = sources.read_image(tmp_path / "vis" / "a.png")
    assert rendered.shape == image.shape and not np.array_equal(rendered, image)
    assert np.all(image == 30)
