"""The two pipelines: the fast GPU-resident path and the AlphaPose-style reference path.

Fast path, per batch of frames: upload once (pinned host memory), letterbox, detector engine,
filter + NMS + un-letterbox, all crops of the batch in one affine sampling, pose engine (flip test
in the same batch), heatmap decode; only the small keypoint arrays go back to the host for pose
NMS. The reference path does the same steps the way AlphaPose does them (cv2 letterbox and
warpAffine per crop, numpy decode and pose NMS, eager fp32): it is the oracle in tests and the
baseline in benchmarks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import groupby
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import cv2
import numpy as np
import torch

from alphapose_trt.engines.base import Engine, map_chunks, pad_rows
from alphapose_trt.engines.eager import CudaGraphCache
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.pipeline import crop as crop_ops
from alphapose_trt.pipeline import decode as decode_ops
from alphapose_trt.pipeline import detect as detect_ops
from alphapose_trt.pipeline.pose_nms import PoseNmsResult, pose_nms_frames, pose_nms_reference
from alphapose_trt.pipeline.transfer import FrameUploader, HostCopy, StackedFrames, StagedFrames, host_image, to_device
from alphapose_trt.results import Person
from alphapose_trt.skeleton import flip_pairs

T = TypeVar("T")
# Candidate rows per image copied to the host ahead of NMS: AlphaPose redoes NMS past 100
# survivors, so 1024 covers any realistic frame; a frame with more is fetched whole (one wait).
CANDIDATE_ROWS = 1024
# Batches between a stage and the next one in process_stream: the host waits for GPU work queued
# this many batches earlier, while later batches keep the GPU busy.
STAGE_LAG = 2
# torch intra-op and OpenCV threads while a CUDA pipeline runs (process-wide; see PosePipeline)
HOST_TORCH_THREADS = 1
HOST_CV_THREADS = 1
# Frame sizes whose detector stage runs as one CUDA graph (each keeps a static copy of a batch of
# frames, 8 x 1080p = 50 MB); further sizes (a folder of assorted images) run op by op.
DETECT_GRAPHS = 2
# The detector stage on a CUDA stream of its own (pipelines with detector-stage graphs), so batch
# k's detector runs beside batch k-2's pose work instead of after it. Why: neither engine fills
# the GPU between and at the ends of its kernels; replayed on two streams the pair took 6.8 ms
# instead of 7.2 ms per 8 frames (H100, benchmarks/two_streams_probe.py).
DETECTOR_STREAM = True


@dataclass(frozen=True)
class PipelineConfig:
    """Knobs of the data path; defaults are AlphaPose's.

    conf / nms: detector objectness and IoU thresholds. max_persons: keep the K best boxes per
    frame. min_box_area: drop smaller detector boxes (px^2). pose_area: pose NMS area threshold.
    flip: flip test. det_batch / pose_batch: frames per detector call, crops per pose call.
    fuse: letterbox, crops and decode as torch.compile'd kernels; None = when the device is CUDA
    and an engine is a compiled one (so the user has already opted into compile time).
    """

    conf: float = detect_ops.CONF_THRESHOLD
    nms: float = detect_ops.NMS_THRESHOLD
    max_persons: int | None = None
    min_box_area: float = 0.0
    pose_area: float = 0.0
    flip: bool = False
    det_batch: int = 8
    pose_batch: int = 64
    fuse: bool | None = None


def _pose_facts(pose: Engine) -> tuple[tuple[int, int], tuple[float, ...], float, tuple]:
    """Crop size, pixel mean, box enlargement and flip pairs, as recorded with the pose engine."""
    extra = pose.meta.extra
    mean = tuple(extra.get("pixel_mean", crop_ops.DEFAULT_PIXEL_MEAN))
    scale = float(extra.get("crop_scale", crop_ops.SCALE_MULT))
    return pose.meta.input_hw, mean, scale, flip_pairs(int(extra.get("num_joints", 17)))


def _persons(nms: PoseNmsResult) -> list[Person]:
    boxes = np.array(nms.boxes, dtype=np.float64)
    boxes[:, 2:] -= boxes[:, :2]  # x1 y1 x2 y2 -> x y w h
    boxes = boxes.astype(np.float32)
    keypoints, keypoint_scores = nms.keypoints.astype(np.float32), nms.keypoint_scores.astype(np.float32)
    box_scores, scores = nms.box_scores.tolist(), nms.scores.tolist()
    return [
        Person(box=boxes[i], box_score=box_scores[i], keypoints=keypoints[i], keypoint_scores=keypoint_scores[i],
               score=scores[i], idx=i)
        for i in range(len(nms))
    ]


_Staged = tuple[StagedFrames | StackedFrames, list[torch.Tensor] | None]  # frames, given boxes


@dataclass
class _Detected:
    """Stage 1 -> 2: a run of same-size frames on the device and its boxes (given, or the
    detector's candidates on their way to the host)."""

    frames: torch.Tensor
    boxes: list[torch.Tensor] | None = None
    candidates: torch.Tensor | None = None  # (B, N, 5) on the device, for the rare overflow
    info: detect_ops.LetterboxInfo | None = None
    copy: HostCopy | None = None


@dataclass
class _Posed:
    """Stage 2 -> 3: boxes on the host, keypoints and their scores on their way."""

    frames: int
    index: np.ndarray
    dets: np.ndarray
    copy: HostCopy


class PosePipeline:
    """Fast path over any detector/pose `Engine`s (eager, compiled, onnx, aot, tensorrt).

    A batch goes through three stages: (1) transfer + letterbox + detector + fixed-size candidate
    ranking, (2) NMS of the top candidates on the host, then crops + pose + decode, (3) pose NMS.
    Each stage hands the next one data that is still being copied, and nothing in between reads
    a device value synchronously, so `process_stream` can keep several batches in flight.

    On CUDA the constructor sets torch's intra-op threads and OpenCV's threads to one for the
    whole process. The host side only runs tiny torch ops, and the OpenMP threads they woke kept
    spinning over the video decoder's cores (H100 host, 1080p mp4: 157 -> 330 frames/s). Frames
    are already converted and copied in parallel, one frame per pool thread, so OpenCV's own
    pool only split each frame again and its idle workers spun in the kernel: 10 ms of system
    CPU time per frame, 0.9 ms with one thread (1080p mp4: 364 -> 465 frames/s).
    """

    def __init__(
        self,
        detector: Engine | None,
        pose: Engine,
        device: torch.device | str,
        config: PipelineConfig = PipelineConfig(),
    ) -> None:
        if detector is not None and detector.meta.model != "detector":
            raise AlphaPoseTrtError(f"the detector engine is a {detector.meta.model} engine")
        if pose.meta.model != "pose":
            raise AlphaPoseTrtError(f"the pose engine is a {pose.meta.model} engine")
        self.detector, self.pose, self.config = detector, pose, config
        self.device = torch.device(device)
        self.pose_hw, self.mean, self.crop_scale, self.pairs = _pose_facts(pose)
        self.upload = FrameUploader(self.device)
        if self.device.type == "cuda":
            torch.set_num_threads(HOST_TORCH_THREADS)
            cv2.setNumThreads(HOST_CV_THREADS)
        compiled = any(e is not None and e.meta.format == "compiled" for e in (detector, pose))
        self.fused_ops = config.fuse if config.fuse is not None else (self.device.type == "cuda" and compiled)
        # Letterbox, detector and candidate ranking replayed as one CUDA graph per frame size: the
        # fused letterbox and the ranking's dozen small ops otherwise cost the host ~1.5 ms of
        # Python and launches per batch, on the thread that also feeds the GPU (profile_pipeline.py).
        forward = detector.capturable() if detector is not None and self.fused_ops else None
        self._detect_graphs = CudaGraphCache(lambda frames: self._ranked_candidates(forward, frames)) if forward else None
        self._detect_stream = torch.cuda.Stream(self.device) if forward and DETECTOR_STREAM else None
        self._most_frames: dict[tuple[str, int, int], int] = {}  # per fused op and frame size (_full_batch)

    # -- stages ---------------------------------------------------------------------------------
    def _start_detect(self, batch: torch.Tensor) -> _Detected:
        """Queue letterbox + detector + candidate ranking; the top rows start for the host."""
        if self.detector is None:
            raise ValueError("no detector engine: pass detections to process_batch")
        size = self.detector.meta.input_hw[0]
        parts, info = [], None
        step = self.config.det_batch
        if self._detect_graphs is not None:  # a graph runs the engine once: at most its largest batch
            step = min(step, self.detector.meta.batch[2])
        for chunk in torch.split(batch, step):
            n = chunk.shape[0]
            if self._graphed((step, *chunk.shape[1:]), chunk):
                chunk = pad_rows(chunk, step)  # a stream's last, partial batch replays the full batch's graph
                parts.append(tuple(t[:n] for t in self._detect_graphs(chunk)))
                info = detect_ops.LetterboxInfo.for_image(chunk.shape[-2:], size)
            else:
                inputs, info = detect_ops.letterbox(self._full_batch("letterbox", chunk), size, self.detector.input_dtype,
                                                    self.fused_ops)
                parts.append(tuple(t[:n] for t in detect_ops.candidates(self.detector(inputs), self.config.conf)))
        boxes, counts = (torch.cat(t) if len(parts) > 1 else t[0] for t in zip(*parts))
        copy = HostCopy.start([boxes[:, :CANDIDATE_ROWS], counts])
        return _Detected(batch, candidates=boxes, info=info, copy=copy)

    def _graphed(self, shape: tuple[int, ...], frames: torch.Tensor) -> bool:
        """Whether a chunk of `shape` (frames' dtype and device) runs as a detector-stage graph."""
        graphs = self._detect_graphs
        if graphs is None:
            return False
        return CudaGraphCache.key(shape, frames.dtype, frames.device) in graphs.graphs or len(graphs.graphs) < DETECT_GRAPHS

    def _full_batch(self, op: str, frames: torch.Tensor) -> torch.Tensor:
        """`frames` with blank frames appended up to the most frames of their size that `op` has
        had, when the ops are fused; the caller cuts the blank frames' outputs off.

        Why: a fused op is built for one frame count (only row counts are dynamic, fusion.py), so
        a stream's short last batch rebuilt the crops at the end of every video: a 300-frame mp4
        read 8 frames per call ran at 45 frames/s instead of ~500, the first time in a process
        (H100, benchmarks/h100-2026-11-27-session7). Copying the few frames is far cheaper."""
        if not self.fused_ops:
            return frames
        n, key = frames.shape[0], (op, *frames.shape[-2:])
        most = self._most_frames[key] = max(self._most_frames.get(key, 0), n)
        if n == most:
            return frames
        full = pad_rows(frames, most)
        layout = torch.channels_last if frames.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return full.contiguous(memory_format=layout)  # the layout the kernels were built for

    def _ranked_candidates(self, forward: Callable[[torch.Tensor], torch.Tensor],
                           frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_start_detect`'s work for one chunk, as captured: the detector runs on its batch bucket."""
        inputs, _ = detect_ops.letterbox(frames, self.detector.meta.input_hw[0], self.detector.input_dtype, True)
        n = inputs.shape[0]
        return detect_ops.candidates(forward(pad_rows(inputs, self.detector.padded_size(n)))[:n], self.config.conf)

    def _boxes(self, detected: _Detected) -> list[torch.Tensor]:
        """Host boxes (M, 5) per frame: given ones, or NMS of the detector's candidates."""
        if detected.boxes is not None:
            return detected.boxes
        top, counts = detected.copy.wait()
        most = int(counts.max()) if len(counts) else 0
        if most > top.shape[1]:  # a crowd beyond the rows copied ahead: fetch them (waits)
            top = detected.candidates[:, :most].cpu()
        c = self.config
        return detect_ops.select(top, counts, detected.info, c.nms, c.max_persons, c.min_box_area)

    def detect(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Boxes (M, 5) x1 y1 x2 y2 score per frame of a same-size uint8 batch, on the host."""
        return self._boxes(self._start_detect(batch))

    def estimate(
        self, batch: torch.Tensor, boxes: Sequence[torch.Tensor | np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops -> pose engine (+ flip) -> decode, for every box of the batch at once.

        boxes: (M, 5) host rows per frame. Returns keypoints (N, K, 2) and their scores (N, K)
        on the device, one row per box in frame order.
        """
        return self._estimate(batch, *_stack_boxes(boxes))

    def _estimate(self, batch: torch.Tensor, dets: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(dets) == 0:
            k = len(self.pairs) * 2 + 1
            return torch.zeros(0, k, 2, device=self.device), torch.zeros(0, k, device=self.device)
        rows = to_device(torch.cat([dets[:, :4], index[:, None].float()], dim=1), self.device)
        crops, crop_boxes = crop_ops.crop(
            self._full_batch("crop", batch), rows[:, 4].long(), rows[:, :4], self.pose_hw, self.mean,
            self.pose.input_dtype, self.crop_scale, self.fused_ops,
        )
        if self.config.flip:
            n = crops.shape[0]
            heatmaps = self._pose(torch.cat([crops, crops.flip(-1)]))
            heatmaps = decode_ops.average_flip(heatmaps[:n].float(), decode_ops.flip_back(heatmaps[n:].float(), self.pairs))
        else:
            heatmaps = self._pose(crops)
        return decode_ops.decode_heatmaps(heatmaps, crop_boxes, self.fused_ops)

    def _pose(self, crops: torch.Tensor) -> torch.Tensor:
        return map_chunks(self.pose, crops, self.config.pose_batch)

    # -- whole batches --------------------------------------------------------------------------
    @torch.inference_mode()
    def process_batch(
        self, frames: Sequence[np.ndarray], detections: Sequence[np.ndarray] | None = None
    ) -> list[list[Person]]:
        """Persons of every frame (RGB uint8 HxWx3). `detections`: optional (M, 5) boxes per
        frame (x1, y1, x2, y2, score) that replace the detector."""
        return self._finish(self._launch_pose(self._launch_detect(self._stage(frames, detections))))

    @torch.inference_mode()
    def process_stream(
        self, batches: Iterable[tuple[T, Sequence[np.ndarray], Sequence[np.ndarray] | None]]
    ) -> Iterator[tuple[T, list[list[Person]]]]:
        """`process_batch` over a stream of (key, frames, detections), software-pipelined.

        Per incoming batch k: its frame copies start on worker threads, then stage 2 of batch
        k-2 and stage 3 of k-3 run on the host, then batch k is sent and its stage 1 queued. So
        the host only waits for work queued two batches earlier, while the GPU still has the
        next batch's pose and detector work queued: host work (NMS, copies, launches, and the
        caller's writing between yields) overlaps GPU work. Keys come back in order.
        """
        detected: deque = deque()
        posed: deque = deque()
        for key, frames, detections in batches:
            staged = self._stage(frames, detections)
            if len(detected) == STAGE_LAG:
                k, item = detected.popleft()
                posed.append((k, self._launch_pose(item)))
            if len(posed) == STAGE_LAG:
                k, item = posed.popleft()
                yield k, self._finish(item)
            detected.append((key, self._launch_detect(staged)))
        while detected or posed:
            if detected:
                k, item = detected.popleft()
                posed.append((k, self._launch_pose(item)))
            if len(posed) == STAGE_LAG or not detected:
                k, item = posed.popleft()
                yield k, self._finish(item)

    def _stage(self, frames: Sequence[np.ndarray], detections: Sequence[np.ndarray] | None) -> list[_Staged]:
        """Start the host copies of each run of same-size frames, with its given boxes if any."""
        out, start = [], 0
        for _, group in groupby(frames, key=lambda f: f.shape):
            group = list(group)
            given = None if detections is None else [
                torch.as_tensor(np.asarray(d, dtype=np.float32).reshape(-1, 5))
                for d in detections[start : start + len(group)]
            ]
            out.append((self.upload.stage(group), given))
            start += len(group)
        return out

    def _launch_detect(self, staged: list[_Staged]) -> list[_Detected]:
        """Stage 1 for each run of same-size frames: transfer, then detector (or given boxes)."""
        out = []
        for frames, given in staged:
            if given is not None:
                out.append(_Detected(frames.send(), boxes=given))
            elif self._detect_stream is None:
                out.append(self._start_detect(frames.send()))
            else:
                # The detector stream waits for this batch's upload only, not for the pose work
                # queued before it. The pose stage reads the frames on the compute stream once the
                # host has the candidates, i.e. after this stream's work (upload included) is done.
                compute = torch.cuda.current_stream(self.device)
                with torch.cuda.stream(self._detect_stream):
                    batch = frames.send()
                    out.append(self._start_detect(batch))
                batch.record_stream(compute)
        return out

    def _launch_pose(self, groups: list[_Detected]) -> list[_Posed]:
        """Stage 2: boxes to the host, then the pose work queued and its results on their way."""
        out = []
        for group in groups:
            boxes = self._boxes(group)
            dets, index = _stack_boxes(boxes)
            coords, scores = self._estimate(group.frames, dets, index)
            out.append(_Posed(len(boxes), index.numpy(), dets.numpy(), HostCopy.start([coords, scores])))
        return out

    def _finish(self, groups: list[_Posed]) -> list[list[Person]]:
        """Stage 3: pose NMS of each run of frames in one pass, once the keypoints are on the host."""
        results: list[list[Person]] = []
        for group in groups:
            coords, scores = (t.numpy() for t in group.copy.wait())
            d = group.dets
            per_frame = pose_nms_frames(group.index, group.frames, d[:, :4], d[:, 4], coords, scores,
                                        self.config.pose_area)
            results += [_persons(nms) for nms in per_frame]
        return results


def _stack_boxes(boxes: Sequence[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Host (N, 5) float32 rows of all frames and the (N,) frame index of each row."""
    rows = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 5).cpu() for b in boxes]
    return (torch.cat(rows) if rows else torch.zeros(0, 5)), detect_ops.row_owners([len(r) for r in rows])


class ReferencePipeline:
    """AlphaPose's way, one frame and one crop at a time on the host, eager fp32 models."""

    def __init__(self, detector: Engine | None, pose: Engine, config: PipelineConfig = PipelineConfig()) -> None:
        for engine, kind in ((detector, "detector"), (pose, "pose")):
            if engine is not None and (engine.meta.precision != "fp32" or engine.meta.format != "eager"):
                raise AlphaPoseTrtError(
                    f"--reference needs eager fp32 weights for the {kind}, got {engine.meta.describe()}"
                )
        self.detector, self.pose, self.config = detector, pose, config
        self.pose_hw, self.mean, self.crop_scale, self.pairs = _pose_facts(pose)
        self.aspect = self.pose_hw[1] / self.pose_hw[0]

    def detect(self, frame: np.ndarray) -> np.ndarray:
        size = self.detector.meta.input_hw[0]
        inputs, scale, _ = detect_ops.letterbox_reference(frame, size)
        raw = self.detector(torch.from_numpy(inputs)[None]).cpu().numpy()[0]
        c = self.config
        return detect_ops.postprocess_reference(
            raw, scale, frame.shape[:2], size, conf=c.conf, nms=c.nms, max_persons=c.max_persons, min_box_area=c.min_box_area
        )

    def estimate(self, frame: np.ndarray, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.pairs) * 2 + 1
        coords = np.zeros((len(dets), k, 2), np.float32)
        scores = np.zeros((len(dets), k), np.float32)
        for i, det in enumerate(dets):
            box = torch.from_numpy(det[None, :4])
            center, scale = (t[0].numpy() for t in crop_ops.box_to_center_scale(box, self.aspect, self.crop_scale))
            crop = crop_ops.crop_reference(frame, center, scale, self.pose_hw, self.mean)
            crop_box = np.concatenate([center - scale * 0.5, center - scale * 0.5 + scale])
            hm = self.pose(torch.from_numpy(crop)[None]).cpu().numpy()
            if self.config.flip:
                hm_flip = self.pose(torch.from_numpy(np.ascontiguousarray(crop[:, :, ::-1]))[None]).cpu().numpy()
                hm = (hm + decode_ops.flip_back_reference(hm_flip, self.pairs)) / 2
            coords[i], scores[i] = decode_ops.decode_heatmaps_reference(hm[0], crop_box)
        return coords, scores

    @torch.inference_mode()
    def process_batch(
        self, frames: Sequence[np.ndarray], detections: Sequence[np.ndarray] | None = None
    ) -> list[list[Person]]:
        results = []
        for i, frame in enumerate(map(host_image, frames)):
            dets = self.detect(frame) if detections is None else np.asarray(detections[i], np.float32).reshape(-1, 5)
            coords, scores = self.estimate(frame, dets)
            nms = pose_nms_reference(dets[:, :4], dets[:, 4], coords, scores, self.config.pose_area)
            results.append(_persons(nms))
        return results

    def process_stream(
        self, batches: Iterable[tuple[T, Sequence[np.ndarray], Sequence[np.ndarray] | None]]
    ) -> Iterator[tuple[T, list[list[Person]]]]:
        """Same interface as PosePipeline.process_stream, one batch at a time."""
        for key, frames, detections in batches:
            yield key, self.process_batch(frames, detections)


