"""Frame sources: images, folders, list files, videos, webcams and streams.

Every source yields `Frame`s holding RGB uint8 HxWx3 images, decoded ahead on a reader thread
that feeds a bounded queue, so decoding overlaps the GPU stage while memory stays bounded. The
reader thread only decodes (or, for image files, only schedules): colour conversion and image
file decoding run on a small thread pool, and the consumer waits for each result in order.
Bad files inside an input (a corrupt image, an undecodable video frame) are skipped, logged and
recorded in `Source.failures` instead of ending a long run; a bad input itself (a missing path,
a folder without images, a video that cannot be opened) raises `AlphaPoseTrtError` at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import re
import threading
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin before 3.11
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import cv2
import numpy as np

from alphapose_trt.errors import AlphaPoseTrtError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2",
    ".pbm", ".pgm", ".ppm", ".pnm",
})
# Larger images are still processed, but decoding and letterboxing them is slow and memory-hungry.
LARGE_IMAGE_SIDE = 8192
DEFAULT_QUEUE_SIZE = 32
DEFAULT_MAX_CONSECUTIVE_FAILURES = 25
# IMREAD_COLOR turns grayscale and palette images into 3 channels, drops alpha and applies the
# EXIF orientation (as AlphaPose's cv2.imread does); ANYDEPTH keeps 16-bit samples so they can
# be scaled to 8 bits instead of being truncated.
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
_UINT16_TO_UINT8 = 255.0 / 65535.0
# How often blocked queue operations wake up to check whether the reader was stopped.
_POLL_S = 0.1
_JOIN_TIMEOUT_S = 10.0
# Threads per pass that turn decoded video frames into RGB and read whole image files. Why a
# pool: BGR->RGB of a 1080p frame (~0.7 ms) done on the decoding thread held a pass to about
# 75 % of decode-alone speed; cv2 releases the GIL, so a few workers keep up with one decoder
# and read the files of an image folder in parallel.
CONVERT_WORKERS = 3

_FLAG_NAMES = ("--image", "--indir", "--list", "--video", "--webcam", "--stream")
# video decoding: OpenCV on the host; FFmpeg through PyAV on the host, RGB made on the device; NVDEC on the GPU
DECODERS = ("opencv", "pyav", "nvdec")


@dataclass
class Frame:
    """One decoded image or video frame.

    image_id: the file name relative to the input root (images) or the frame number in the
    video (an int that keeps counting over frames that failed to decode).
    image: RGB uint8 (H, W, 3): a numpy array, or a CUDA tensor from `--decoder pyav` or `nvdec`.
    path: the image or video file, None for webcams and streams.
    index: running position among the frames actually yielded (0, 1, 2, ... without gaps).
    """

    image_id: str | int
    image: np.ndarray | torch.Tensor
    path: Path | None = None
    index: int = 0


class UnreadableImageError(AlphaPoseTrtError):
    """An image file that exists but cannot be read or decoded; sources skip and record it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def natural_sort_key(text: str) -> tuple:
    """Sort key that orders digit runs by value, so "img2" comes before "img10".

    Ties between equal values ("img2" / "img02") fall back to the plain text, keeping the
    order total and stable.
    """
    parts = re.split(r"(\d+)", text)
    return tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)), text


def _to_rgb8(decoded: np.ndarray, path: Path) -> np.ndarray:
    """BGR (8- or 16-bit) as OpenCV decodes it -> RGB uint8; 16-bit scaled by 255/65535."""
    if decoded.dtype == np.uint16:
        decoded = cv2.convertScaleAbs(decoded, alpha=_UINT16_TO_UINT8)
    elif decoded.dtype != np.uint8:
        raise UnreadableImageError(path, f"unsupported sample type {decoded.dtype} (need 8 or 16 bit)")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as RGB uint8 (H, W, 3).

    Why np.fromfile + cv2.imdecode: cv2.imread cannot open non-ASCII paths on every platform.
    Raises `UnreadableImageError` (with the reason) for missing, empty or corrupt files.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise UnreadableImageError(path, "the file is empty")
    try:
        decoded = cv2.imdecode(data, _DECODE_FLAGS)
    except cv2.error as exc:
        raise UnreadableImageError(path, f"OpenCV failed to decode it ({exc.err})") from exc
    if decoded is None:
        raise UnreadableImageError(path, "not a decodable image (corrupt, truncated or unsupported format)")
    image = _to_rgb8(decoded, path)
    height, width = image.shape[:2]
    if max(height, width) > LARGE_IMAGE_SIDE:
        logger.warning("%s: %dx%d px is very large (side > %d); processing it anyway, slowly",
                       path, width, height, LARGE_IMAGE_SIDE)
    return image


@dataclass
class _PendingFrame:
    """A frame whose RGB image is still being made on the conversion pool.

    what: the name `Source.failures` records when the image turns out unreadable, and the frame
    is skipped. None where that cannot be a one-off (a video's frames share one sample type):
    the error then ends the pass, raised in the consumer.
    """

    image_id: str | int
    path: Path | None
    image: Future[np.ndarray]
    what: str | None = None

    def result(self) -> np.ndarray:
        """The RGB image, or what the worker raised. Waits in _POLL_S slices so that Ctrl-C
        reaches the consumer even where a blocking lock wait cannot be interrupted."""
        while True:
            try:
                return self.image.result(timeout=_POLL_S)
            except FutureTimeout:
                continue


def _done(image: np.ndarray | torch.Tensor) -> Future:
    """A frame made on the reader thread itself (GPU decoders convert whole batches there)."""
    future: Future = Future()
    future.set_result(image)
    return future


_Produce = Callable[[threading.Event, Executor], Iterator[_PendingFrame]]


class _ReaderThread:
    """Runs a frame generator on a daemon thread and hands frames over through a bounded queue.

    Why a thread: decoding (cv2 releases the GIL) then overlaps the GPU work of the consumer;
    the bounded queue keeps memory fixed when the consumer is slower than the decoder. The
    generator submits each frame's conversion to a pool owned by this pass and queues the
    pending frame, so a queued item is at most one frame in memory and order is the queue's.
    Errors raised in the generator are re-raised in the consumer, after the frames before them.
    """

    _END = object()

    def __init__(self, produce: _Produce, queue_size: int, name: str):
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._pool = ThreadPoolExecutor(CONVERT_WORKERS, thread_name_prefix=f"{name}:convert")
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _run(self, produce: _Produce) -> None:
        try:
            with contextlib.closing(produce(self._stop, self._pool)) as frames:
                for frame in frames:
                    if not self._put(frame):
                        return
        except BaseException as exc:  # handed to the consumer thread and re-raised there
            self._error = exc
        self._put(self._END)

    def _put(self, item: object) -> bool:
        """Put unless stopped; False when the reader was stopped while waiting for room."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[_PendingFrame]:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is self._END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def stop(self) -> None:
        """Stop decoding, wait (bounded) for the thread to release its file or device, then
        cancel the conversions nobody will collect and end the pool's threads.

        The queue is emptied first: a reader waiting for room (the usual state when the consumer
        stops early, at a frame limit) then returns at once instead of at its next _POLL_S
        check, which cost up to 0.1 s of every early stop, inside the consumer's time."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(_JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            logger.warning("reader thread %s did not stop within %.0f s (blocked in a read?)",
                           self._thread.name, _JOIN_TIMEOUT_S)
        self._pool.shutdown(wait=True, cancel_futures=True)


class Source:
    """An iterable of `Frame`s decoded ahead on a reader thread.

    fps and size ((width, height)) are known for videos and webcams, None for images.
    `failures` lists (what, why) for everything skipped during the latest pass.
    Each `iter()` starts a fresh pass; `close()` (or leaving a `with` block, or Ctrl-C while
    iterating) stops the reader thread.
    """

    def __init__(self, name: str, queue_size: int):
        self.name = name
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self.failures: list[tuple[str, str]] = []
        self._queue_size = queue_size
        self._reader: _ReaderThread | None = None

    @property
    def length(self) -> int | None:
        """Number of frames when known (images; a video's reported, possibly approximate count)."""
        return None

    def warm_up(self) -> None:
        """Finish any one-off start-up work now (NVDEC: its decoding process), so that the first
        pass starts reading at once; most sources have none."""

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(f"{self.name}: the number of frames is unknown (live input)")
        return self.length

    def __bool__(self) -> bool:
        return True  # without this, bool() would call __len__, which live inputs cannot answer

    def __iter__(self) -> Iterator[Frame]:
        self._stop_reader()
        self.failures.clear()
        reader = _ReaderThread(self._produce, self._queue_size, name=f"reader:{self.name}")
        self._reader = reader
        try:
            yield from self._in_order(reader)
        finally:
            reader.stop()

    def _in_order(self, pending_frames: Iterable[_PendingFrame]) -> Iterator[Frame]:
        """Wait for each frame's image in decoding order. An unreadable one is recorded and
        skipped where it stands, so `index` counts only the frames actually yielded."""
        position = 0
        for pending in pending_frames:
            try:
                image = pending.result()
            except UnreadableImageError as exc:
                if pending.what is None:
                    raise
                self._record_failure(pending.what, exc.reason)
                continue
            except CancelledError:
                return  # close() from another thread cancelled the conversions still queued
            yield Frame(image_id=pending.image_id, image=image, path=pending.path, index=position)
            position += 1

    def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None

    def close(self) -> None:
        """Stop the reader thread (and release the input); safe to call more than once."""
        self._stop_reader()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record_failure(self, what: str, why: str) -> None:
        logger.warning("skipped %s: %s", what, why)
        self.failures.append((what, why))

    def _produce(self, stop: threading.Event, pool: Executor) -> Iterator[_PendingFrame]:
        """Decode on the reader thread; submit the rest of each frame's work to `pool`."""
        raise NotImplementedError


class ImageSource(Source):
    """Image files in a fixed order, each with its image id (name relative to the input root)."""

    def __init__(self, name: str, paths: list[Path], image_ids: list[str], queue_size: int):
        super().__init__(name, queue_size)
        self.paths = paths
        self.image_ids = image_ids

    @property
    def length(self) -> int:
        return len(self.paths)

    def _produce(self, stop: threading.Event, pool: Executor) -> Iterator[_PendingFrame]:
        for path, image_id in zip(self.paths, self.image_ids):
            if stop.is_set():
                return
            yield _PendingFrame(image_id, path, pool.submit(read_image, path), what=str(path))


class VideoSource(Source):
    """A video file, webcam or stream read with cv2.VideoCapture.

    A frame that fails to decode mid-file is recorded with its frame number and skipped, as is
    a read that fails before the reported frame count; after `max_consecutive_failures` such
    failures in a row the pass stops (recorded too). Past the reported count (or for live
    inputs without one) a failed read is the end of the input.
    """

    def __init__(self, name: str, target: str | int, path: Path | None, queue_size: int,
                 max_consecutive_failures: int):
        super().__init__(name, queue_size)
        self._target = target
        self._path = path
        self._max_failures = max_consecutive_failures
        self._capture: cv2.VideoCapture | None = self._open()
        self.fps = _positive_or_none(self._capture.get(cv2.CAP_PROP_FPS))
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (width, height) if width > 0 and height > 0 else None
        count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self._count = int(count) if math.isfinite(count) and count >= 1 else None

    @property
    def length(self) -> int | None:
        return self._count

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(self._target)
        if not capture.isOpened():
            capture.release()
            raise AlphaPoseTrtError(
                f"{self.name}: cannot be opened as a video (unsupported format or codec, or unreachable)")
        return capture

    def close(self) -> None:
        super().close()
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _produce(self, stop: threading.Event, pool: Executor) -> Iterator[_PendingFrame]:
        capture = self._capture if self._capture is not None else self._open()
        self._capture = None  # owned by this pass from now on
        try:
            yield from self._decode(capture, stop, pool)
        finally:
            capture.release()

    def _decode(self, capture: cv2.VideoCapture, stop: threading.Event,
                pool: Executor) -> Iterator[_PendingFrame]:
        frame_number = consecutive = 0
        source_path = self._path or Path(self.name)
        while not stop.is_set():
            grabbed = capture.grab()
            decoded = capture.retrieve()[1] if grabbed else None
            if decoded is not None:
                consecutive = 0
                yield _PendingFrame(frame_number, self._path, pool.submit(_to_rgb8, decoded, source_path))
            elif grabbed or (self._count is not None and frame_number < self._count):
                why = ("the frame could not be decoded" if grabbed else
                       f"read failed before the reported end ({self._count} frames, may be approximate)")
                self._record_failure(f"{self.name} frame {frame_number}", why)
                consecutive += 1
                if consecutive >= self._max_failures:
                    self._record_failure(self.name, f"stopped after {consecutive} unreadable frames in a row")
                    return
            else:
                return
            frame_number += 1


def quarter_turns(path: Path) -> int:
    """Counterclockwise quarter turns that show a video file upright, read from its display
    matrix by OpenCV, whose reader applies them (CAP_PROP_ORIENTATION_AUTO, on by default).

    Why: decoders hand out the frames as coded, and phone videos are often coded sideways with a
    rotation to show them by; AlphaPose reads them upright through OpenCV, so the other decoders
    turn their frames the same way (`upright`) for the same keypoints."""
    capture = cv2.VideoCapture(str(path))
    try:
        degrees = capture.get(cv2.CAP_PROP_ORIENTATION_META) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return round((360 - degrees) / 90) % 4 if math.isfinite(degrees) else 0


def upright(image: np.ndarray | torch.Tensor, turns: int) -> np.ndarray | torch.Tensor:
    """(..., H, W, 3) frames turned `turns` quarter turns counterclockwise, contiguous."""
    if turns == 0:
        return image
    if isinstance(image, np.ndarray):
        return np.ascontiguousarray(np.rot90(image, turns, axes=(-3, -2)))
    return image.rot90(turns, dims=(-3, -2)).contiguous()


def turned_size(size: tuple[int, int] | None, turns: int) -> tuple[int, int] | None:
    """(width, height) of frames turned `turns` quarter turns."""
    return size[::-1] if size is not None and turns % 2 else size


def _positive_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) and value > 0 else None


def open_source(image: str | os.PathLike | None = None, indir: str | os.PathLike | None = None,
                list_file: str | os.PathLike | None = None, video: str | os.PathLike | None = None,
                webcam: int | None = None, stream: str | None = None, *,
                queue_size: int = DEFAULT_QUEUE_SIZE,
                max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
                decoder: str = "opencv", device: str | None = None) -> Source:
    """Open exactly one input as a `Source` of RGB frames.

    queue_size: frames decoded ahead (memory is about queue_size frames).
    max_consecutive_failures: undecodable video frames in a row before a pass gives up.
    decoder: "opencv" (host numpy frames); for a video file also "pyav" (FFmpeg through PyAV,
    RGB made on `device`, default the CUDA one when present: `alphapose_trt.io.pyav`) or "nvdec"
    (decoded on the CUDA `device`: `alphapose_trt.io.nvdec`); their frames on CUDA are tensors.
    """
    inputs = (image, indir, list_file, video, webcam, stream)
    given = [flag for flag, value in zip(_FLAG_NAMES, inputs) if value is not None]
    if len(given) != 1:
        raise AlphaPoseTrtError(f"give exactly one input of {', '.join(_FLAG_NAMES)} "
                                f"(got {', '.join(given) or 'none'})")
    if queue_size < 1 or max_consecutive_failures < 1:
        raise AlphaPoseTrtError(f"queue size ({queue_size}) and max consecutive failures "
                                f"({max_consecutive_failures}) must be at least 1")
    if decoder not in DECODERS:
        raise AlphaPoseTrtError(f"--decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder != "opencv" and video is None:
        raise AlphaPoseTrtError(f"--decoder {decoder} reads video files (--video), not {given[0]}")
    options = {"queue_size": queue_size}
    if image is not None:
        return _image_file_source(Path(image), **options)
    if indir is not None:
        return _folder_source(Path(indir), **options)
    if list_file is not None:
        return _list_source(Path(list_file), **options)
    options["max_consecutive_failures"] = max_consecutive_failures
    if video is not None:
        if decoder == "nvdec":
            from alphapose_trt.io.nvdec import NvdecVideoSource

            path = _existing_video(Path(video))
            return NvdecVideoSource(path, device or "cuda", queue_size)
        if decoder == "pyav":
            from alphapose_trt.io.pyav import PyAVVideoSource

            return PyAVVideoSource(_existing_video(Path(video)), device, **options)
        return _video_file_source(Path(video), **options)
    if webcam is not None:
        if isinstance(webcam, bool) or not isinstance(webcam, int) or webcam < 0:
            raise AlphaPoseTrtError(f"--webcam must be a camera index (0, 1, ...), got {webcam!r}")
        return VideoSource(f"webcam {webcam}", webcam, None, **options)
    return VideoSource(f"stream {stream}", str(stream), None, **options)


def _image_file_source(path: Path, queue_size: int) -> ImageSource:
    if not path.exists():
        raise AlphaPoseTrtError(f"{path}: no such image file (--image)")
    if path.is_dir():
        raise AlphaPoseTrtError(f"{path}: is a folder; use --indir for folders of images")
    return ImageSource(str(path), [path], [path.name], queue_size)


def _folder_source(root: Path, queue_size: int) -> ImageSource:
    """Every image below `root` (recursively), in natural order of the relative path."""
    if not root.exists():
        raise AlphaPoseTrtError(f"{root}: no such folder (--indir)")
    if not root.is_dir():
        raise AlphaPoseTrtError(f"{root}: is not a folder; use --image for a single image")
    found = {p.relative_to(root).as_posix(): p for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    if not found:
        raise AlphaPoseTrtError(f"{root}: no images found (searched recursively for "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    image_ids = sorted(found, key=natural_sort_key)
    return ImageSource(str(root), [found[i] for i in image_ids], image_ids, queue_size)


def _list_source(list_file: Path, queue_size: int) -> ImageSource:
    """Images named one per line (relative to the list's folder); blank and # lines ignored.

    The image id is the path as written, normalised; an entry outside the list's folder
    (absolute, or climbing with "..") gets its file name as id so outputs stay inside outdir.
    """
    if not list_file.is_file():
        raise AlphaPoseTrtError(f"{list_file}: no such list file (--list)")
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AlphaPoseTrtError(f"{list_file}: cannot read the list as UTF-8 text ({exc})") from exc
    entries = [line.strip() for line in lines]
    entries = [entry for entry in entries if entry and not entry.startswith("#")]
    if not entries:
        raise AlphaPoseTrtError(f"{list_file}: lists no images (only blank or # lines)")
    paths = [list_file.parent / entry for entry in entries]
    return ImageSource(str(list_file), paths, [_list_image_id(entry) for entry in entries], queue_size)


def _list_image_id(entry: str) -> str:
    normal = os.path.normpath(entry)
    if os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        return Path(normal).name
    return Path(normal).as_posix()


def _existing_video(path: Path) -> Path:
    if not path.is_file():
        raise AlphaPoseTrtError(f"{path}: no such video file (--video)")
    return path


def _video_file_source(path: Path, queue_size: int, max_consecutive_failures: int) -> VideoSource:
    _existing_video(path)
    return VideoSource(str(path), str(path), path, queue_size, max_consecutive_failures)
