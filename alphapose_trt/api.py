"""The Python API: `PoseEstimator(detector=..., pose=..., device=...)`, `est(image) -> [Person]`.

Engines are opened by file (engine files by suffix; weight files as eager or compiled models), so
the same object serves a quick CPU check, the fp32 reference and the compiled GPU fast path.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from alphapose_trt.engines import open_engine
from alphapose_trt.engines.base import Engine
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline, ReferencePipeline
from alphapose_trt.results import Person

DETECTOR_WEIGHTS = "yolov3-spp.weights"
POSE_WEIGHTS = "fast_res50_256x192.pth"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tune_cudnn(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once per shape (`cudnn.benchmark`,
    process-wide) before any engine is built or captured.

    Why: the benchmarks measure every backend so (benchmarks/README.md), and a pipeline's shapes
    are few and fixed (the 608 letterbox, 256x192 crops, the engines' batch buckets), so the
    one-time timing pays back; cuDNN's heuristics alone may pick slower kernels.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _default_weights(name: str) -> Path:
    from alphapose_trt.download import weights_path

    path = weights_path(name)
    if not path.is_file():
        raise AlphaPoseTrtError(f"{path}: weights not found; run `alphapose-trt download` or pass the file explicitly")
    return path


def batched(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class PoseEstimator:
    """Multi-person pose estimation on RGB uint8 images.

    detector / pose: an engine file (.onnx, .pt2, .engine), a weights file (.weights, .pth), an
    opened `Engine`, or None for the downloaded default weights. `detector=False` runs without a
    detector (boxes must then be passed with each call). backend: eager or compiled (for weights
    files). reference: run AlphaPose's way (cv2 crops, numpy decode, eager fp32) as the oracle.
    On CUDA it turns on `cudnn.benchmark` for the process (`tune_cudnn`).
    """

    def __init__(
        self,
        detector: str | Path | Engine | None | bool = None,
        pose: str | Path | Engine | None = None,
        device: str | torch.device | None = None,
        backend: str = "eager",
        precision: str | None = None,
        config: PipelineConfig | None = None,
        reference: bool = False,
        detector_cfg: str | Path | None = None,
        pose_cfg: str | Path | None = None,
        img_size: int | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.config = config or PipelineConfig()
        tune_cudnn(self.device)
        if reference:
            backend, precision = "eager", "fp32"

        def engine(spec, kind: str, default: str, cfg, size=None) -> Engine:
            if isinstance(spec, Engine):
                return spec
            path = Path(spec) if spec is not None else _default_weights(default)
            batch = self.config.det_batch if kind == "detector" else self.config.pose_batch
            return open_engine(path, kind, backend, self.device, precision, max_batch=batch, cfg=cfg, img_size=size)

        self.detector = None if detector is False else engine(detector, "detector", DETECTOR_WEIGHTS, detector_cfg, img_size)
        self.pose = engine(pose, "pose", POSE_WEIGHTS, pose_cfg)
        if reference:
            self.pipeline = ReferencePipeline(self.detector, self.pose, self.config)
        else:
            self.pipeline = PosePipeline(self.detector, self.pose, self.device, self.config)

    def __call__(self, image: np.ndarray | str | Path, detections: np.ndarray | None = None) -> list[Person]:
        """Persons in one RGB image (or image file). detections: optional (M, 5) x1 y1 x2 y2 score."""
        if not isinstance(image, np.ndarray):
            from alphapose_trt.io.sources import read_image

            image = read_image(image)
        dets = None if detections is None else [detections]
        return self.pipeline.process_batch([image], dets)[0]

    def process(
        self, frames: Iterable[np.ndarray], detections: Sequence[np.ndarray] | None = None
    ) -> Iterator[list[Person]]:
        """Persons per frame for a stream of frames, batched `config.det_batch` frames at a time
        with later batches in flight (host and GPU work overlap)."""

        def batches():
            start = 0
            for chunk in batched(frames, self.config.det_batch):
                yield None, chunk, None if detections is None else detections[start : start + len(chunk)]
                start += len(chunk)

        for _, results in self.pipeline.process_stream(batches()):
            yield from results
