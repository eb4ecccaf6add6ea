"""FastPose: AlphaPose's SE-ResNet + DUC pose network, its description and its checkpoint loader.

The module tree mirrors AlphaPose's exactly (`preact`, `suffle1`, `duc1`, `duc2`, `conv_out`, and
inside `preact` torchvision-style ResNet names), so a model-zoo `.pth` loads with no key renaming
and our ONNX/TensorRT exports can be traced back to AlphaPose's layers by name. Unlike AlphaPose,
the constructor never downloads ImageNet weights: inference always loads a full checkpoint.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from torch import nn

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.skeleton import flip_pairs

# Bottleneck blocks per stage for the SE-ResNet depths FastPose is published with.
RESNET_STAGES: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
# The backbone downsamples by 32 and the three PixelShuffle(2) stages upsample by 8.
BACKBONE_STRIDE = 32
HEATMAP_STRIDE = 4
# Channels reaching `conv_out` (AlphaPose's `FastPose.conv_dim`).
HEAD_CHANNELS = 128


class _SpecError(AlphaPoseTrtError):
    """A PoseModelSpec field is invalid; carries the field so a yaml reader can name its key."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"PoseModelSpec.{field} {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class PoseModelSpec:
    """What the pipeline must know about a pose model: the one place for these constants.

    input_size / heatmap_size are (height, width). Crops are RGB / 255 minus `pixel_mean`, with no
    division by a standard deviation (AlphaPose's SimpleTransform). `crop_scale` is how much a
    detector box is enlarged (after forcing the input aspect ratio) before it is cropped.
    """

    num_joints: int = 17
    num_layers: int = 50
    input_size: tuple[int, int] = (256, 192)
    heatmap_size: tuple[int, int] = (64, 48)
    pixel_mean: tuple[float, float, float] = (0.406, 0.457, 0.480)
    crop_scale: float = 1.25

    def __post_init__(self) -> None:
        if self.num_joints < 1:
            raise _SpecError("num_joints", f"must be at least 1, got {self.num_joints}")
        if self.num_layers not in RESNET_STAGES:
            raise _SpecError(
                "num_layers", f"must be one of {sorted(RESNET_STAGES)}, got {self.num_layers}"
            )
        if len(self.input_size) != 2 or any(s <= 0 or s % BACKBONE_STRIDE for s in self.input_size):
            raise _SpecError(
                "input_size",
                f"must be two positive multiples of {BACKBONE_STRIDE} (h, w), "
                f"got {self.input_size}",
            )
        expected = tuple(s // HEATMAP_STRIDE for s in self.input_size)
        if tuple(self.heatmap_size) != expected:
            raise _SpecError(
                "heatmap_size",
                f"must be input_size / {HEATMAP_STRIDE} = {expected} for FastPose, "
                f"got {tuple(self.heatmap_size)}",
            )
        if len(self.pixel_mean) != 3:
            raise _SpecError("pixel_mean", f"must have 3 values (R, G, B), got {self.pixel_mean}")
        if self.crop_scale <= 0:
            raise _SpecError("crop_scale", f"must be positive, got {self.crop_scale}")

    @property
    def aspect_ratio(self) -> float:
        """Crop width / height (0.75 for 256x192): boxes are grown to this aspect first."""
        return self.input_size[1] / self.input_size[0]

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """Left/right joint pairs for the flip test of this keypoint layout."""
        return flip_pairs(self.num_joints)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SELayer(nn.Module):
    """Squeeze-excitation without channel reduction: pool, Linear(c,c), ReLU, Linear, sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels),
            nn.ReLU(inplace=True),
            nn.Linear(channels, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]


class Bottleneck(nn.Module):
    """ResNet bottleneck, stride on the 3x3 conv; a stage's first block adds SE and downsample."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, first: bool = False) -> None:
        super().__init__()
        width_out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = _batch_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = _batch_norm(planes)
        self.conv3 = nn.Conv2d(planes, width_out, kernel_size=1, bias=False)
        self.bn3 = _batch_norm(width_out)
        # AlphaPose builds SE and the projection shortcut together, in each stage's first block.
        self.se = SELayer(width_out) if first else None
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(inplanes, width_out, kernel_size=1, stride=stride, bias=False),
                _batch_norm(width_out),
            )
            if first
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        residual = x if self.downsample is None else self.downsample(x)
        # Out-of-place add: in-place ops on traced graphs only complicate export.
        return torch.relu(out + residual)


class SEResNet(nn.Module):
    """The `preact` backbone: (B, 3, H, W) -> (B, 2048, H/32, W/32)."""

    def __init__(self, num_layers: int = 50) -> None:
        super().__init__()
        stages = RESNET_STAGES[num_layers]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = _batch_norm(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (blocks, planes) in enumerate(zip(stages, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            layer = [Bottleneck(inplanes, planes, stride, first=True)]
            inplanes = planes * Bottleneck.expansion
            layer += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        return x


class DUC(nn.Module):
    """Dense upsampling convolution: conv3x3 (no bias) -> BN -> ReLU -> PixelShuffle(2)."""

    def __init__(self, inplanes: int, planes: int, upscale_factor: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inplanes, planes, kernel_size=3, padding=1, bias=False)
        self.bn = _batch_norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.pixel_shuffle = nn.PixelShuffle(upscale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pixel_shuffle(self.relu(self.bn(self.conv(x))))


class FastPose(nn.Module):
    """AlphaPose FastPose: normalised crops (B, 3, H, W) -> heatmaps (B, K, H/4, W/4).

    Parameter names and shapes equal AlphaPose's, so its checkpoints load unchanged.
    """

    def __init__(self, num_joints: int = 17, num_layers: int = 50) -> None:
        super().__init__()
        if num_layers not in RESNET_STAGES:
            raise AlphaPoseTrtError(
                f"FastPose supports num_layers {sorted(RESNET_STAGES)}, got {num_layers}"
            )
        if num_joints < 1:
            raise AlphaPoseTrtError(f"FastPose needs num_joints >= 1, got {num_joints}")
        self.num_joints = num_joints
        self.num_layers = num_layers
        self.preact = SEResNet(num_layers)
        self.suffle1 = nn.PixelShuffle(2)  # AlphaPose's spelling, kept for name parity.
        self.duc1 = DUC(512, 1024)
        self.duc2 = DUC(256, 512)
        self.conv_out = nn.Conv2d(HEAD_CHANNELS, num_joints, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.suffle1(self.preact(x))
        return self.conv_out(self.duc2(self.duc1(out)))


# ---------------------------------------------------------------------------- yaml description

# PoseModelSpec field -> the AlphaPose yaml key it comes from (for error messages).
_YAML_KEYS = {
    "num_joints": "DATA_PRESET.NUM_JOINTS",
    "num_layers": "MODEL.NUM_LAYERS",
    "input_size": "DATA_PRESET.IMAGE_SIZE",
    "heatmap_size": "DATA_PRESET.HEATMAP_SIZE",
}
# MODEL keys that change the architecture in ways this FastPose does not implement.
_UNSUPPORTED_MODEL_KEYS = ("DCN", "STAGE_WITH_DCN", "CONV_DIM")


def _yaml_get(cfg: Mapping[str, Any], dotted: str, path: Path) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise AlphaPoseTrtError(f"{path}: missing key {dotted}")
        node = node[part]
    return node


def _yaml_int(cfg: Mapping[str, Any], dotted: str, path: Path) -> int:
    value = _yaml_get(cfg, dotted, path)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AlphaPoseTrtError(f"{path}: {dotted} must be an integer, got {value!r}")
    return value


def _yaml_size(cfg: Mapping[str, Any], dotted: str, path: Path) -> tuple[int, int]:
    value = _yaml_get(cfg, dotted, path)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
    ):
        raise AlphaPoseTrtError(f"{path}: {dotted} must be a list of two integers, got {value!r}")
    return int(value[0]), int(value[1])


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AlphaPoseTrtError(f"{path}: no such AlphaPose config file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AlphaPoseTrtError(f"{path}: not a readable yaml file ({reason})") from None
    if not isinstance(cfg, Mapping):
        raise AlphaPoseTrtError(f"{path}: expected a yaml mapping at the top level")
    return cfg


def pose_spec_from_yaml(path: str | os.PathLike) -> PoseModelSpec:
    """Read the model description from an AlphaPose experiment yaml, refusing what we can't run."""
    path = Path(path)
    cfg = _read_yaml(path)
    model_type = _yaml_get(cfg, "MODEL.TYPE", path)
    if model_type != "FastPose":
        raise AlphaPoseTrtError(f"{path}: MODEL.TYPE must be 'FastPose', got {model_type!r}")
    for key in _UNSUPPORTED_MODEL_KEYS:
        if key in cfg["MODEL"]:
            raise AlphaPoseTrtError(f"{path}: MODEL.{key} is not supported (plain FastPose only)")
    preset = _yaml_get(cfg, "DATA_PRESET.TYPE", path)
    if preset != "simple":
        raise AlphaPoseTrtError(
            f"{path}: DATA_PRESET.TYPE must be 'simple' (SimpleTransform crops), got {preset!r}"
        )
    try:
        return PoseModelSpec(
            num_joints=_yaml_int(cfg, "DATA_PRESET.NUM_JOINTS", path),
            num_layers=_yaml_int(cfg, "MODEL.NUM_LAYERS", path),
            input_size=_yaml_size(cfg, "DATA_PRESET.IMAGE_SIZE", path),
            heatmap_size=_yaml_size(cfg, "DATA_PRESET.HEATMAP_SIZE", path),
        )
    except _SpecError as exc:
        raise AlphaPoseTrtError(f"{path}: {_YAML_KEYS[exc.field]} {exc.problem}") from None


def fastpose_from_yaml(path: str | os.PathLike) -> tuple[FastPose, PoseModelSpec]:
    """Build the (randomly initialised, eval-mode) FastPose an AlphaPose yaml describes."""
    spec = pose_spec_from_yaml(path)
    model = FastPose(num_joints=spec.num_joints, num_layers=spec.num_layers)
    return model.eval(), spec


# ---------------------------------------------------------------------------- checkpoints

# Keys under which training scripts commonly wrap the state_dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_DATAPARALLEL_PREFIX = "module."
# How many offending names an error message lists per category.
_LIST_AT_MOST = 3


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True, turning every failure into a one-line user error."""
    if not path.is_file():
        raise AlphaPoseTrtError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch's unpickler raises anything on garbage bytes
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and unsafe:
            raise AlphaPoseTrtError(
                f"{path}: refused: the checkpoint holds Python objects ({unsafe.group(1)}) that "
                "would run code when unpickled; only tensors are loaded (weights_only=True)"
            ) from None
        raise AlphaPoseTrtError(
            f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or not a .pth)"
        ) from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state_dict in a loaded checkpoint: plain, or wrapped under a known key."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
        found = ", ".join(repr(k) for k in list(obj)[:5])
        raise AlphaPoseTrtError(
            f"{path}: no state_dict of tensors found (top-level keys: {found or 'none'}; "
            f"wrappers tried: {', '.join(_WRAPPER_KEYS)})"
        )
    raise AlphaPoseTrtError(f"{path}: expected a state_dict, got a {type(obj).__name__}")


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's `module.` prefix, which training with several GPUs adds to every key."""
    return {
        k[len(_DATAPARALLEL_PREFIX):] if k.startswith(_DATAPARALLEL_PREFIX) else k: v
        for k, v in state.items()
    }


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_AT_MOST])
    more = ", ..." if len(items) > _LIST_AT_MOST else ""
    return f"{len(items)} {label} ({shown}{more})"


def _mismatch_report(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> str | None:
    # BN's num_batches_tracked only counts training steps; old checkpoints predate it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    parts = [
        _listing(label, items)
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("mis-shaped", misshaped))
        if items
    ]
    return "; ".join(parts) if parts else None


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an AlphaPose checkpoint into `model`, strictly, refusing pickles that run code.

    Accepts a plain state_dict or one wrapped under 'state_dict'/'model'/..., with or without
    `module.` prefixes. Any missing, unexpected or mis-shaped parameter is an error: a silently
    half-loaded pose model produces plausible-looking but wrong keypoints.
    """
    path = Path(path)
    state = _strip_prefix(_unwrap(_torch_load(path), path))
    expected = model.state_dict()
    problem = _mismatch_report(state, expected)
    if problem:
        raise AlphaPoseTrtError(
            f"{path}: checkpoint does not fit {type(model).__name__}"
            f"{_describe(model)}: {problem}"
        )
    merged = {**expected, **state}
    model.load_state_dict(merged, strict=True)


def _describe(model: nn.Module) -> str:
    if isinstance(model, FastPose):
        return f"(num_joints={model.num_joints}, num_layers={model.num_layers})"
    return ""
