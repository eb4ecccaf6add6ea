"""The two pipelines: the fast GPU-resident path and the AlphaPose-style reference path.

Fast path, per batch of frames: upload once (pinned host memory), letterbox, detector engine,
filter + NMS + un-letterbox, all crops of the batch in one affine sampling, pose engine (flip test
in the same batch), heatmap decode; only the small keypoint arrays go back to the host for pose
NMS. The reference path does the same steps the way AlphaPose does them (cv2 letterbox and
warpAffine per crop, numpy decode and pose NMS, eager fp32): it is the oracle in tests and the
baseline in benchmarks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from alphapose_trt.engines.base import Engine
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.pipeline import crop as crop_ops
from alphapose_trt.pipeline import decode as decode_ops
from alphapose_trt.pipeline import detect as detect_ops
from alphapose_trt.pipeline.pose_nms import PoseNmsResult, pose_nms, pose_nms_reference
from alphapose_trt.results import Person
from alphapose_trt.skeleton import flip_pairs

T = TypeVar("T")
UPLOAD_THREADS = 8  # host threads copying frames into pinned memory (the H100 host has 16 cores)



@dataclass(frozen=True)
class PipelineConfig:
    """Knobs of the data path; defaults are AlphaPose's.

    conf / nms: detector objectness and IoU thresholds. max_persons: keep the K best boxes per
    frame. min_box_area: drop smaller detector boxes (px^2). pose_area: pose NMS area threshold.
    flip: flip test. det_batch / pose_batch: frames per detector call, crops per pose call.
    """

    conf: float = detect_ops.CONF_THRESHOLD
    nms: float = detect_ops.NMS_THRESHOLD
    max_persons: int | None = None
    min_box_area: float = 0.0
    pose_area: float = 0.0
    flip: bool = False
    det_batch: int = 8
    pose_batch: int = 64


def _pose_facts(pose: Engine) -> tuple[tuple[int, int], tuple[float, ...], float, tuple]:
    """Crop size, pixel mean, box enlargement and flip pairs, as recorded with the pose engine."""
    extra = pose.meta.extra
    mean = tuple(extra.get("pixel_mean", crop_ops.DEFAULT_PIXEL_MEAN))
    scale = float(extra.get("crop_scale", crop_ops.SCALE_MULT))
    return pose.meta.input_hw, mean, scale, flip_pairs(int(extra.get("num_joints", 17)))


def _persons(nms: PoseNmsResult) -> list[Person]:
    out = []
    for i in range(len(nms)):
        x1, y1, x2, y2 = (float(v) for v in nms.boxes[i])
        out.append(
            Person(
                box=np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32),
                box_score=float(nms.box_scores[i]),
                keypoints=nms.keypoints[i].astype(np.float32),
                keypoint_scores=nms.keypoint_scores[i].astype(np.float32),
                score=float(nms.scores[i]),
                idx=i,
            )
        )
    return out


@dataclass
class _InFlight:
    """A batch whose (frame index, boxes, keypoints, scores) are on their way to the host."""

    frames: int
    host: list[torch.Tensor]
    ready: torch.cuda.Event | None

    @classmethod
    def start(cls, frames: int, tensors: Sequence[torch.Tensor]) -> "_InFlight":
        if tensors[0].device.type != "cuda":
            return cls(frames, list(tensors), None)
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True) for t in tensors]
        ready = torch.cuda.Event()
        ready.record()
        return cls(frames, host, ready)

    def wait(self) -> list[np.ndarray]:
        if self.ready is not None:
            self.ready.synchronize()
        return [t.numpy() for t in self.host]


class PosePipeline:
    """Fast path over any detector/pose `Engine`s (eager, compiled, onnx, aot, tensorrt)."""

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
        self._staging: dict[tuple, list[tuple[torch.Tensor, torch.cuda.Event]]] = {}
        self._copier = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="upload")

    # -- stages ---------------------------------------------------------------------------------
    def _upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, 3, H, W) uint8 on the device from same-size HxWx3 RGB frames.

        On CUDA each frame is copied once (frames in parallel threads), straight into a reused
        pinned staging buffer, and sent with an asynchronous copy; two buffers alternate so filling the next batch overlaps the
        previous transfer (an event guards a buffer until its transfer is done).
        """
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
        shape = (len(frames), *frames[0].shape)
        slots = self._staging.setdefault(shape, [])
        if len(slots) < 2:
            slots.append((torch.empty(shape, dtype=torch.uint8, pin_memory=True), torch.cuda.Event()))
        buffer, done = slots.pop(0)
        done.synchronize()
        staging = buffer.numpy()
        # one thread per frame: np.copyto releases the GIL, and a 1080p frame is 6 MB
        list(self._copier.map(lambda i: np.copyto(staging[i], frames[i]), range(len(frames))))
        device_batch = buffer.to(self.device, non_blocking=True)
        done.record()
        slots.append((buffer, done))
        return device_batch.permute(0, 3, 1, 2)

    def detect(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Boxes (M, 5) x1 y1 x2 y2 score per frame of a same-size uint8 batch."""
        if self.detector is None:
            raise ValueError("no detector engine: pass detections to process_batch")
        size = self.detector.meta.input_hw[0]
        boxes: list[torch.Tensor] = []
        for chunk in torch.split(batch, self.config.det_batch):
            inputs, info = detect_ops.letterbox(chunk, size, dtype=self.detector.input_dtype)
            raw = self.detector(inputs)
            c = self.config
            boxes += detect_ops.postprocess(raw, info, c.conf, c.nms, c.max_persons, c.min_box_area)
        return boxes

    def estimate(self, batch: torch.Tensor, boxes: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Crops -> pose engine (+ flip) -> decode, for every box of the batch at once.

        Returns (frame index (N,), boxes (N, 5), keypoints (N, K, 2), keypoint scores (N, K)).
        """
        index = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=self.device) for i, b in enumerate(boxes)])
        dets = torch.cat([b.to(self.device) for b in boxes]) if boxes else torch.zeros(0, 5, device=self.device)
        if dets.shape[0] == 0:
            k = len(self.pairs) * 2 + 1
            return index, dets, torch.zeros(0, k, 2, device=self.device), torch.zeros(0, k, device=self.device)
        crops, crop_boxes = crop_ops.crop(
            batch, index, dets[:, :4], self.pose_hw, self.mean, self.pose.input_dtype, self.crop_scale
        )
        if self.config.flip:
            n = crops.shape[0]
            heatmaps = self._pose(torch.cat([crops, crops.flip(-1)]))
            heatmaps = decode_ops.average_flip(heatmaps[:n].float(), decode_ops.flip_back(heatmaps[n:].float(), self.pairs))
        else:
            heatmaps = self._pose(crops)
        coords, scores = decode_ops.decode_heatmaps(heatmaps, crop_boxes)
        return index, dets, coords, scores

    def _pose(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.pose(c) for c in torch.split(crops, self.config.pose_batch)])

    # -- whole batches --------------------------------------------------------------------------
    @torch.inference_mode()
    def process_batch(
        self, frames: Sequence[np.ndarray], detections: Sequence[np.ndarray] | None = None
    ) -> list[list[Person]]:
        """Persons of every frame (RGB uint8 HxWx3). `detections`: optional (M, 5) boxes per
        frame (x1, y1, x2, y2, score) that replace the detector."""
        return self._finish(self._launch(frames, detections))

    @torch.inference_mode()
    def process_stream(
        self, batches: Iterable[tuple[T, Sequence[np.ndarray], Sequence[np.ndarray] | None]]
    ) -> Iterator[tuple[T, list[list[Person]]]]:
        """`process_batch` over a stream of (key, frames, detections), one batch in flight.

        Batch k+1 is staged and queued on the GPU before batch k's pose NMS runs on the host, so
        host work (frame copies, NMS, the caller's writing) overlaps GPU work. Keys come back
        with their results, in order.
        """
        pending = None
        for key, frames, detections in batches:
            launched = (key, self._launch(frames, detections))
            if pending is not None:
                yield pending[0], self._finish(pending[1])
            pending = launched
        if pending is not None:
            yield pending[0], self._finish(pending[1])

    def _launch(self, frames: Sequence[np.ndarray], detections: Sequence[np.ndarray] | None) -> list[_InFlight]:
        """Queue the GPU work of a batch (one item per run of same-size frames); results are
        copied to pinned host memory asynchronously."""
        flights, start = [], 0
        for _, group in groupby(frames, key=lambda f: f.shape):
            group = list(group)
            batch = self._upload(group)
            if detections is None:
                boxes = self.detect(batch)
            else:
                boxes = [torch.as_tensor(np.asarray(d, dtype=np.float32).reshape(-1, 5), device=self.device)
                         for d in detections[start : start + len(group)]]
            flights.append(_InFlight.start(len(group), self.estimate(batch, boxes)))
            start += len(group)
        return flights

    def _finish(self, flights: list[_InFlight]) -> list[list[Person]]:
        results: list[list[Person]] = []
        for flight in flights:
            host = flight.wait()
            results += [self._nms(host, i) for i in range(flight.frames)]
        return results

    def _nms(self, host: list[np.ndarray], frame: int) -> list[Person]:
        index, dets, coords, scores = host
        rows = index == frame
        nms = pose_nms(dets[rows, :4], dets[rows, 4], coords[rows], scores[rows], self.config.pose_area)
        return _persons(nms)


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
        for i, frame in enumerate(frames):
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


