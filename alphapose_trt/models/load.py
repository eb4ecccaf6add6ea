"""Load either model from its real weight file into a `LoadedModel` the engines can build from.

The file suffix says which model it is (darknet `.weights` -> detector, AlphaPose `.pth` -> pose),
and what the pipeline needs to know about the model (input size, joints, pixel mean) travels with
it as `extra` rather than being hard-coded downstream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from alphapose_trt.errors import AlphaPoseTrtError

DETECTOR_SUFFIXES = (".weights",)
POSE_SUFFIXES = (".pth", ".pt")


@dataclass
class LoadedModel:
    """An eval-mode module plus the facts an engine records about it."""

    kind: str
    module: nn.Module
    input_hw: tuple[int, int]
    weights_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_kind_of(path: str | Path) -> str:
    """'detector' or 'pose' from a weights file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in DETECTOR_SUFFIXES:
        return "detector"
    if suffix in POSE_SUFFIXES:
        return "pose"
    raise AlphaPoseTrtError(
        f"{path}: cannot tell the model from the suffix {suffix!r} "
        f"(detector: {', '.join(DETECTOR_SUFFIXES)}; pose: {', '.join(POSE_SUFFIXES)})"
    )


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AlphaPoseTrtError(f"{path}: {what} file not found")
    return path


def load_detector(weights: str | Path, cfg: str | Path | None = None, img_size: int | None = None) -> LoadedModel:
    """YOLO detector from a darknet `.weights` file (built-in YOLOv3-SPP unless `cfg` is given)."""
    from alphapose_trt.models.darknet import Darknet, build_yolov3_spp, load_darknet_weights, parse_cfg

    weights = _existing(weights, "detector weights")
    if cfg is None:
        module = build_yolov3_spp(img_size or 608)
    else:
        module = Darknet(parse_cfg(_existing(cfg, "darknet cfg")), img_size=img_size)
    load_darknet_weights(module, weights)
    module.eval()
    size = int(module.img_size)
    return LoadedModel(
        kind="detector",
        module=module,
        input_hw=(size, size),
        weights_sha256=file_sha256(weights),
        extra={"num_classes": int(module.num_classes), "cfg": str(cfg) if cfg else "builtin:yolov3-spp"},
        source=str(weights),
    )


def load_pose(weights: str | Path, cfg: str | Path | None = None) -> LoadedModel:
    """FastPose from an AlphaPose `.pth` checkpoint (FastPose-R50 256x192 unless `cfg` yaml)."""
    from alphapose_trt.models.fastpose import FastPose, PoseModelSpec, fastpose_from_yaml, load_checkpoint

    weights = _existing(weights, "pose checkpoint")
    if cfg is None:
        spec = PoseModelSpec()
        module = FastPose(num_joints=spec.num_joints)
    else:
        module, spec = fastpose_from_yaml(_existing(cfg, "AlphaPose yaml"))
    load_checkpoint(module, weights)
    module.eval()
    return LoadedModel(
        kind="pose",
        module=module,
        input_hw=tuple(spec.input_size),
        weights_sha256=file_sha256(weights),
        extra={
            "num_joints": int(spec.num_joints),
            "heatmap_hw": list(spec.heatmap_size),
            "pixel_mean": list(spec.pixel_mean),
            "crop_scale": float(spec.crop_scale),
            "cfg": str(cfg) if cfg else "builtin:fastpose-r50-256x192",
        },
        source=str(weights),
    )


def load_model(weights: str | Path, cfg: str | Path | None = None, img_size: int | None = None) -> LoadedModel:
    """Either model, chosen by the weights file's suffix."""
    if model_kind_of(weights) == "detector":
        return load_detector(weights, cfg, img_size)
    if img_size is not None:
        raise AlphaPoseTrtError(f"{weights}: img_size applies to the detector only")
    return load_pose(weights, cfg)
