"""Result sinks: JSON (AlphaPose, COCO, OpenPose), rendered images and video, writer thread.

Every JSON file is written whole through `atomic_write`, so a reader (or a crash, or Ctrl-C)
only ever sees complete, valid files. The AlphaPose/COCO results file is rewritten at flush
points (every `flush_every` frames and/or `flush_seconds`, and on close), so a killed run keeps
everything up to its last flush; use the writers as context managers to flush on any exit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import cv2
import numpy as np

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.fileio import atomic_write
from alphapose_trt.io.render import DEFAULT_KP_THRESHOLD, draw_persons
from alphapose_trt.io.sources import Frame
from alphapose_trt.pipeline.transfer import host_image
from alphapose_trt.results import FrameResult, Person
from alphapose_trt.skeleton import COCO_KEYPOINTS, NUM_COCO_KEYPOINTS, OPENPOSE18_FROM_COCO

logger = logging.getLogger(__name__)

RESULTS_FILE = "alphapose-results.json"
COCO_ID_MAP_FILE = "coco-image-ids.json"
JSON_FORMATS = ("alphapose", "coco", "openpose")
VIS_DIR = "vis"
OPENPOSE_VERSION = 1.3
DEFAULT_FLUSH_SECONDS = 30.0
DEFAULT_ASYNC_QUEUE_SIZE = 64
_PERSON_CATEGORY_ID = 1
_RENDER_SUFFIXES = (".jpg", ".jpeg", ".png")
_DEFAULT_RENDER_SUFFIX = ".jpg"
_SHOULDERS = (COCO_KEYPOINTS.index("left_shoulder"), COCO_KEYPOINTS.index("right_shoulder"))
_OPENPOSE_EMPTY_PARTS = ("face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d",
                         "pose_keypoints_3d", "face_keypoints_3d", "hand_left_keypoints_3d",
                         "hand_right_keypoints_3d")


class Sink(Protocol):
    """Anything with write(...) and close(); what `AsyncSink` runs on its thread."""

    def write(self, *args: Any) -> None: ...

    def close(self) -> None: ...


def _float32_list(values: Any) -> list[float]:
    """Floats as their shortest float32 text: lossless for float32 data, half the JSON size."""
    return [float(text) for text in np.asarray(values, dtype=np.float32).reshape(-1).astype(str)]


def _safe_relative(image_id: str) -> PurePosixPath:
    """An image id as a relative path; an absolute id or one climbing with ".." keeps its name."""
    path = PurePosixPath(image_id.replace("\\", "/"))
    return PurePosixPath(path.name) if path.is_absolute() or ".." in path.parts else path


def output_stem(image_id: str | int) -> PurePosixPath:
    """Relative output path without suffix for an image id; never leaves the output folder.

    Frame numbers become 12-digit names (so they sort); file names keep their sub-folders.
    """
    if isinstance(image_id, str):
        return _safe_relative(image_id).with_suffix("")
    return PurePosixPath(f"{int(image_id):012d}")


class AlphaPoseJsonWriter:
    """Write pose results as AlphaPose, COCO or OpenPose JSON.

    alphapose: `alphapose-results.json`, a list of {"image_id", "category_id", "keypoints"
      [x1, y1, s1, ...], "score", "box" [x, y, w, h], "idx"} per person; image ids as given.
    coco: the same file with only COCO's result keys and integer image ids. A file whose stem
      is a number keeps that number ("000000397133.jpg" -> 397133); other names (and numbers
      already taken) get the next free running index, in arrival order. Every name -> id pair
      is saved in `coco-image-ids.json`.
    openpose: one `{stem}_keypoints.json` per frame (OpenPose 1.3 BODY_18 layout). The neck,
      which COCO lacks, is the mean of the two shoulders; its score is the *minimum* of theirs,
      because the point is only as reliable as the worse shoulder (a mean would give a
      confident neck halfway to a missed shoulder).
    """

    def __init__(self, outdir: str | os.PathLike, format: str = "alphapose",
                 flush_every: int | None = None, flush_seconds: float | None = DEFAULT_FLUSH_SECONDS):
        if format not in JSON_FORMATS:
            raise AlphaPoseTrtError(f"unknown JSON format {format!r} (choose from {', '.join(JSON_FORMATS)})")
        if flush_every is not None and flush_every < 1:
            raise AlphaPoseTrtError(f"flush_every must be at least 1 frame, got {flush_every}")
        self.outdir = Path(outdir)
        self.format = format
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._entries: list[str] = []
        self._pending_frames = 0
        self._last_flush = time.monotonic()
        self._coco_ids: dict[str, int] = {}
        self._taken_ids: set[int] = set()
        self._next_id = 1
        self._closed = False

    @property
    def path(self) -> Path:
        """The results file (alphapose and coco formats)."""
        return self.outdir / RESULTS_FILE

    def write(self, result: FrameResult) -> None:
        """Add one frame's persons; flushes to disk when a flush point is reached."""
        if self._closed:
            raise RuntimeError(f"{self.path}: write after close")
        if self.format == "openpose":
            self._write_openpose(result)
            return
        image_id = (self._coco_image_id(result.image_id) if self.format == "coco"
                    else result.image_id if isinstance(result.image_id, str) else int(result.image_id))
        for person in result.persons:
            self._entries.append(_dumps(self._entry(person, image_id), result.image_id))
        self._pending_frames += 1
        if self._flush_due():
            self.flush()

    def _flush_due(self) -> bool:
        by_frames = self.flush_every is not None and self._pending_frames >= self.flush_every
        by_time = (self.flush_seconds is not None
                   and time.monotonic() - self._last_flush >= self.flush_seconds)
        return by_frames or by_time

    def flush(self) -> None:
        """Rewrite the results file (and the COCO id map) with everything written so far.

        Each flush rewrites the whole file, so its cost grows with the run: the default flushes
        by time (every 30 s) rather than every few frames.
        """
        if self.format == "openpose":
            return
        with atomic_write(self.path) as fh:
            fh.write("[" + ",\n".join(self._entries) + "]\n")
        if self._coco_ids:
            with atomic_write(self.outdir / COCO_ID_MAP_FILE) as fh:
                json.dump(self._coco_ids, fh, indent=1, ensure_ascii=False)
        self._pending_frames = 0
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> AlphaPoseJsonWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _entry(self, person: Person, image_id: str | int) -> dict:
        keypoints = np.concatenate([np.asarray(person.keypoints, dtype=np.float32).reshape(-1, 2),
                                    np.asarray(person.keypoint_scores, dtype=np.float32).reshape(-1, 1)],
                                   axis=1)
        entry = {"image_id": image_id, "category_id": _PERSON_CATEGORY_ID,
                 "keypoints": _float32_list(keypoints), "score": _float32_list(person.score)[0]}
        if self.format == "alphapose":
            entry["box"] = _float32_list(person.box)
            entry["idx"] = int(person.idx)
        return entry

    def _coco_image_id(self, image_id: str | int) -> int:
        if not isinstance(image_id, str):
            return int(image_id)
        known = self._coco_ids.get(image_id)
        if known is not None:
            return known
        stem = PurePosixPath(image_id.replace("\\", "/")).stem
        wanted = int(stem) if stem.isascii() and stem.isdigit() else None
        if wanted is None or wanted in self._taken_ids:
            while self._next_id in self._taken_ids:
                self._next_id += 1
            wanted = self._next_id
        self._coco_ids[image_id] = wanted
        self._taken_ids.add(wanted)
        return wanted

    def _write_openpose(self, result: FrameResult) -> None:
        people = []
        for person in result.persons:
            people.append({"person_id": [-1], "pose_keypoints_2d": _openpose18(person, result.image_id),
                           **{part: [] for part in _OPENPOSE_EMPTY_PARTS}})
        stem = output_stem(result.image_id)
        path = self.outdir / stem.parent / f"{stem.name}_keypoints.json"
        text = _dumps({"version": OPENPOSE_VERSION, "people": people}, result.image_id)
        with atomic_write(path) as fh:
            fh.write(text)


def _openpose18(person: Person, image_id: str | int) -> list[float]:
    """COCO-17 keypoints -> OpenPose BODY_18 [x, y, c] * 18 (neck from the shoulders)."""
    points = np.asarray(person.keypoints, dtype=np.float32).reshape(-1, 2)
    scores = np.asarray(person.keypoint_scores, dtype=np.float32).reshape(-1)
    if len(points) != NUM_COCO_KEYPOINTS:
        raise ValueError(f"image {image_id}: OpenPose output needs {NUM_COCO_KEYPOINTS} COCO "
                         f"keypoints, got {len(points)}")
    rows = []
    for source in OPENPOSE18_FROM_COCO:
        if source == "neck":
            rows.append([*points[list(_SHOULDERS)].mean(axis=0), scores[list(_SHOULDERS)].min()])
        else:
            rows.append([*points[source], scores[source]])
    return _float32_list(rows)


def _dumps(obj: Any, image_id: str | int) -> str:
    """JSON text; refuses NaN/inf (which would make the file invalid JSON) with a clear message."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"image {image_id}: non-finite keypoint, box or score values cannot be "
                         f"written as JSON") from exc


class ImageWriter:
    """Save rendered frames under `outdir/vis/` with the input's relative name.

    .jpg/.jpeg/.png names are kept; other suffixes (.bmp, .tif, ...) get ".jpg" appended, so
    "a.bmp" and "a.png" cannot overwrite each other; video frames are saved as 000000000012.jpg.
    """

    def __init__(self, outdir: str | os.PathLike, jpeg_quality: int = 95):
        self.root = Path(outdir) / VIS_DIR
        self.jpeg_quality = jpeg_quality

    def path_for(self, image_id: str | int) -> Path:
        """Where the rendered frame for `image_id` is saved."""
        if not isinstance(image_id, str):
            return self.root / output_stem(image_id).with_suffix(_DEFAULT_RENDER_SUFFIX)
        relative = _safe_relative(image_id)
        if relative.suffix.lower() not in _RENDER_SUFFIXES:
            relative = relative.with_name(relative.name + _DEFAULT_RENDER_SUFFIX)
        return self.root / relative

    def write(self, image_id: str | int, image_rgb: np.ndarray) -> Path:
        path = self.path_for(image_id)
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise AlphaPoseTrtError(f"{path}: OpenCV could not encode the rendered image")
        with atomic_write(path, "wb") as fh:
            fh.write(encoded.tobytes())
        return path

    def close(self) -> None:
        """Nothing is buffered; present so every sink can be closed alike."""


class VideoWriter:
    """Write RGB frames to a video (mp4v by default) with the source's fps and frame size."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int],
                 fourcc: str = "mp4v"):
        self.path = Path(path)
        if not (math.isfinite(fps) and fps > 0):
            raise AlphaPoseTrtError(f"{self.path}: video fps must be a positive number, got {fps}")
        width, height = (int(v) for v in size)
        if width < 1 or height < 1:
            raise AlphaPoseTrtError(f"{self.path}: video size must be positive, got {size}")
        self.fps, self.size = float(fps), (width, height)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AlphaPoseTrtError(f"{self.path}: cannot create its folder ({exc.strerror or exc})") from exc
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps,
                                       self.size)
        if not self._writer.isOpened():
            raise AlphaPoseTrtError(f"{self.path}: cannot open a {fourcc} video for writing "
                                    f"(unsupported suffix or codec, or unwritable location)")

    def write(self, image_rgb: np.ndarray) -> None:
        height, width = image_rgb.shape[:2]
        if (width, height) != self.size:
            # cv2 would silently drop a frame of the wrong size.
            raise ValueError(f"{self.path}: frame is {width}x{height}, the video is "
                             f"{self.size[0]}x{self.size[1]}")
        self._writer.write(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class FrameOutputs:
    """Everything a run writes per frame: JSON results, rendered image, rendered video frame.

    Rendering happens here (once, shared by image and video), so wrapping this object in an
    `AsyncSink` moves both drawing and file writing off the inference thread.
    """

    def __init__(self, json_writer: AlphaPoseJsonWriter | None = None,
                 image_writer: ImageWriter | None = None, video_writer: VideoWriter | None = None,
                 show_box: bool = False, kp_threshold: float = DEFAULT_KP_THRESHOLD):
        self.json_writer = json_writer
        self.image_writer = image_writer
        self.video_writer = video_writer
        self.show_box = show_box
        self.kp_threshold = kp_threshold

    def write(self, frame: Frame, result: FrameResult) -> None:
        if self.json_writer is not None:
            self.json_writer.write(result)
        if self.image_writer is None and self.video_writer is None:
            return
        drawn = draw_persons(host_image(frame.image), result.persons, self.show_box, self.kp_threshold)
        if self.image_writer is not None:
            self.image_writer.write(result.image_id, drawn)
        if self.video_writer is not None:
            self.video_writer.write(drawn)

    def close(self) -> None:
        """Close every writer, even if one fails; the first failure is re-raised."""
        error: BaseException | None = None
        for writer in (self.json_writer, self.image_writer, self.video_writer):
            if writer is None:
                continue
            try:
                writer.close()
            except BaseException as exc:  # keep closing the others, report the first
                error = error or exc
        if error is not None:
            raise error


class AsyncSink:
    """Run a sink's writes on a background thread, behind a bounded queue.

    Why: JSON encoding, rendering and image/video encoding would otherwise stall the GPU loop;
    the bounded queue applies back-pressure instead of growing without limit. The first error
    in the thread is re-raised by the next `write` and by `close` (later items are dropped);
    `close` first writes everything already queued, then closes the wrapped sink.
    """

    _STOP = object()

    def __init__(self, sink: Sink, queue_size: int = DEFAULT_ASYNC_QUEUE_SIZE):
        if queue_size < 1:
            raise AlphaPoseTrtError(f"writer queue size must be at least 1, got {queue_size}")
        self.sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"writer:{type(sink).__name__}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            args = self._queue.get()
            if args is self._STOP:
                return
            if self._error is None:
                try:
                    self.sink.write(*args)
                except BaseException as exc:  # re-raised in the caller's thread
                    logger.error("writer %s failed: %s", type(self.sink).__name__, exc)
                    self._error = exc

    def write(self, *args: Any) -> None:
        """Queue `sink.write(*args)`; blocks while the queue is full."""
        if self._closed:
            raise RuntimeError(f"{type(self.sink).__name__}: write after close")
        if self._error is not None:
            raise self._error
        self._queue.put(args)

    def close(self) -> None:
        """Finish queued writes, close the sink, and re-raise a write error from the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(self._STOP)
        self._thread.join()
        try:
            self.sink.close()
        finally:
            if self._error is not None:
                raise self._error

    def __enter__(self) -> AsyncSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
