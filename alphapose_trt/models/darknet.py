"""Darknet-format YOLO detectors (YOLOv3-SPP and friends) as export-friendly PyTorch modules.

Three parts, each tied to darknet's own formats so that the published `.cfg`/`.weights` files work
unchanged:

- `parse_cfg` reads a darknet cfg into a list of canonical layer dicts (defaults filled in, route and
  shortcut indices made absolute, training-only keys dropped). Anything that would change the maths
  and that we do not implement is refused with the file and line, instead of being silently ignored.
- `Darknet` builds the network from those dicts. Its YOLO decode uses only split/cat (no in-place
  slice writes, which ONNX turns into ScatterND) and its max-pools use MaxPool2d's own padding (no
  Pad node), because both once broke TensorRT's ONNX parser.
- `load_darknet_weights` / `save_darknet_weights` read and write darknet's binary weight layout.

Layer indices everywhere are darknet's: 0 is the first layer after `[net]`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.fileio import atomic_write

__all__ = [
    "Darknet",
    "DarknetHeader",
    "build_yolov3_spp",
    "darknet_weights_size",
    "load_darknet_weights",
    "parse_cfg",
    "save_darknet_weights",
    "yolov3_spp_cfg",
]

# Darknet's "leaky" activation is a leaky ReLU with this fixed slope.
LEAKY_SLOPE = 0.1
# Darknet's cuDNN inference path (and AlexeyAB's fork everywhere) normalises with
# sqrt(running_var + 1e-5), and AlphaPose's PyTorch port uses BatchNorm2d's default 1e-5 too; the
# published weights were trained and evaluated that way, so the same eps is needed to reproduce
# the same activations (pjreddie's CPU-only path, sqrt(var) + 1e-6, differs by a negligible amount).
BN_EPS = 1e-5

DEFAULT_IMG_SIZE = 608
COCO_NUM_CLASSES = 80
# The nine COCO anchors (w, h in input pixels) of YOLOv3 / YOLOv3-SPP, smallest first.
YOLOV3_ANCHORS = (
    (10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326),
)
# Darknet-53 backbone: (filters, residual blocks) per stride-2 stage.
_DARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))
_SPP_POOL_SIZES = (5, 9, 13)

# Weight files written here carry version 0.2.0, as the published yolov3*.weights do: with
# major * 10 + minor >= 2 the `seen` counter is an int64, so the header is 20 bytes.
_WRITE_VERSION = (0, 2, 0)
_VERSION_HEADER = struct.Struct("<3i")


# ----------------------------------------------------------------------------------------------
# cfg parsing
# ----------------------------------------------------------------------------------------------

_SECTION_ALIASES = {
    "net": "net",
    "network": "net",
    "convolutional": "convolutional",
    "conv": "convolutional",
    "shortcut": "shortcut",
    "route": "route",
    "upsample": "upsample",
    "maxpool": "maxpool",
    "max": "maxpool",
    "yolo": "yolo",
}

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky": lambda: nn.LeakyReLU(LEAKY_SLOPE),
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "mish": nn.Mish,
    "logistic": nn.Sigmoid,
    "swish": nn.SiLU,
}

# Keys that only matter for training (or for darknet's own bookkeeping): accepted and dropped.
_IGNORED_KEYS: dict[str, frozenset[str]] = {
    "net": frozenset(
        """batch subdivisions momentum decay angle saturation exposure hue learning_rate burn_in
        max_batches policy steps scales step gamma power rate max_crop min_crop aspect flip mosaic
        mosaic_bound mixup cutmix blur gaussian_noise letter_box adam B1 B2 eps label_smooth_eps
        random track time_steps augment_speed seq_scales sequential_subdivisions try_fix_nan
        loss_scale dynamic_minibatch optimized_memory workspace_size_limit_MB max_chart_loss
        contrastive contrastive_jit_flip contrastive_color unsupervised ema_alpha
        weights_reject_freq equidistant_point num_sigmas_reject_badlabels
        badlabels_rejection_percentage show_receptive_field""".split()
    ),
    "convolutional": frozenset({"stopbackward", "dont_update", "train_only_bn", "burnin_update"}),
    "shortcut": frozenset(),
    "route": frozenset({"stopbackward"}),
    "upsample": frozenset(),
    "maxpool": frozenset(),
    "yolo": frozenset(
        """jitter ignore_thresh truth_thresh iou_thresh iou_thresh_kind random iou_loss
        iou_normalizer cls_normalizer obj_normalizer delta_normalizer nms_kind beta_nms resize
        max_delta counters_per_class label_smooth_eps focal_loss objectness_smooth max map
        track_history_size sim_thresh dets_for_track dets_for_show track_ciou_norm
        embedding_layer""".split()
    ),
}

_REQUIRED = object()


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _ints(text: str) -> list[int]:
    return [int(item) for item in _items(text)]


def _floats(text: str) -> list[float]:
    return [float(item) for item in _items(text)]


class _Section:
    """One `[section]` of a cfg file: its options with line numbers, and which ones were read.

    Why: every error must point at the offending line, and keys nobody read must be reported as
    unknown rather than silently ignored.
    """

    def __init__(self, kind: str, name: str, line: int, origin: str) -> None:
        self.kind, self.name, self.line, self.origin = kind, name, line, origin
        self.options: dict[str, tuple[str, int]] = {}
        self._read: set[str] = set()

    def add(self, key: str, value: str, line: int) -> None:
        if key in self.options:
            raise self.error(f"duplicate key '{key}' (first on line {self.options[key][1]})", line=line)
        self.options[key] = (value, line)

    def error(self, message: str, key: str | None = None, line: int | None = None) -> AlphaPoseTrtError:
        if line is None:
            line = self.options[key][1] if key in self.options else self.line
        return AlphaPoseTrtError(f"{self.origin}, line {line}: [{self.name}] {message}")

    def get(self, key: str, convert: Callable[[str], Any] = int, default: Any = _REQUIRED) -> Any:
        self._read.add(key)
        if key not in self.options:
            if default is _REQUIRED:
                raise self.error(f"missing required key '{key}'")
            return default
        text = self.options[key][0]
        try:
            return convert(text)
        except ValueError:
            raise self.error(f"bad value '{text}' for '{key}'", key) from None

    def positive(self, key: str, default: Any = _REQUIRED) -> int:
        value = self.get(key, int, default)
        if value <= 0:
            raise self.error(f"'{key}' must be a positive integer, got {value}", key)
        return value

    def require_default(self, key: str, default: Any, convert: Callable[[str], Any] = int) -> None:
        """Accept `key` only at its default: other values change the maths and are unsupported."""
        value = self.get(key, convert, default)
        if value != default:
            raise self.error(f"unsupported {key}={self.options[key][0]} (only {default} is implemented)", key)

    def activation(self, default: str) -> str:
        name = self.get("activation", str.strip, default)
        if name not in _ACTIVATIONS:
            raise self.error(
                f"unsupported activation '{name}' (supported: {', '.join(sorted(_ACTIVATIONS))})",
                "activation",
            )
        return name

    def layer_index(self, key: str, ref: int, index: int) -> int:
        """Darknet's reference rule: negative = relative to this layer, else absolute."""
        absolute = index + ref if ref < 0 else ref
        if not 0 <= absolute < index:
            raise self.error(f"{key} {ref} does not name an earlier layer (this is layer {index})", key)
        return absolute

    def check_unread(self) -> None:
        for key, (_, line) in self.options.items():
            if key not in self._read and key not in _IGNORED_KEYS[self.kind]:
                raise self.error(f"unknown key '{key}'", line=line)


def _read_sections(text: str, origin: str) -> list[_Section]:
    sections: list[_Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            name = line[1:-1].strip() if line.endswith("]") else None
            if name not in _SECTION_ALIASES:
                raise AlphaPoseTrtError(f"{origin}, line {number}: unknown section {line}")
            sections.append(_Section(_SECTION_ALIASES[name], name, number, origin))
        elif "=" not in line:
            raise AlphaPoseTrtError(
                f"{origin}, line {number}: expected 'key=value' or '[section]', got '{line}'"
            )
        elif not sections:
            raise AlphaPoseTrtError(f"{origin}, line {number}: option before the first [section]")
        else:
            key, value = line.split("=", 1)
            sections[-1].add(key.strip(), value.strip(), number)
    return sections


def _parse_net(sec: _Section, index: int) -> dict:
    return {
        "type": "net",
        "width": sec.positive("width"),
        "height": sec.positive("height"),
        "channels": sec.positive("channels", 3),
    }


def _parse_convolutional(sec: _Section, index: int) -> dict:
    sec.require_default("dilation", 1)
    size = sec.positive("size", 1)
    padding = sec.get("padding", int, 0)
    if sec.get("pad", int, 0):
        padding = size // 2  # darknet: `pad=1` means "same" padding and overrides `padding`
    if padding < 0:
        raise sec.error(f"negative padding {padding}", "padding")
    filters = sec.positive("filters", 1)
    groups = sec.positive("groups", 1)
    if filters % groups:
        raise sec.error(f"filters={filters} is not divisible by groups={groups}", "groups")
    return {
        "type": "convolutional",
        "filters": filters,
        "size": size,
        "stride": sec.positive("stride", 1),
        "padding": padding,
        "groups": groups,
        "batch_normalize": bool(sec.get("batch_normalize", int, 0)),
        "activation": sec.activation("logistic"),
    }


def _parse_shortcut(sec: _Section, index: int) -> dict:
    sec.require_default("weights_type", "none", str.strip)
    sec.require_default("weights_normalization", "none", str.strip)
    sources = sec.get("from", _ints)
    if len(sources) != 1:
        raise sec.error(f"only one 'from' layer is supported, got {len(sources)}", "from")
    return {
        "type": "shortcut",
        "from": sec.layer_index("from", sources[0], index),
        "activation": sec.activation("linear"),
    }


def _parse_route(sec: _Section, index: int) -> dict:
    refs = sec.get("layers", _ints)
    if not refs:
        raise sec.error("'layers' is empty", "layers")
    groups = sec.positive("groups", 1)
    group_id = sec.get("group_id", int, 0)
    if not 0 <= group_id < groups:
        raise sec.error(f"group_id={group_id} is outside 0..{groups - 1}", "group_id")
    return {
        "type": "route",
        "layers": [sec.layer_index("layers", ref, index) for ref in refs],
        "groups": groups,
        "group_id": group_id,
    }


def _parse_upsample(sec: _Section, index: int) -> dict:
    sec.require_default("scale", 1.0, float)
    return {"type": "upsample", "stride": sec.positive("stride", 2)}


def _parse_maxpool(sec: _Section, index: int) -> dict:
    stride = sec.positive("stride", 1)
    size = sec.positive("size", stride)
    padding = sec.get("padding", int, size - 1)  # darknet's default: size - 1, mostly on the right
    try:
        _maxpool_geometry(size, stride, padding)
    except ValueError as exc:
        raise sec.error(str(exc), "padding" if "padding" in sec.options else "size") from None
    return {"type": "maxpool", "size": size, "stride": stride, "padding": padding}


def _parse_yolo(sec: _Section, index: int) -> dict:
    sec.require_default("new_coords", 0)
    num = sec.positive("num", 1)
    values = sec.get("anchors", _floats)
    if len(values) != 2 * num:
        raise sec.error(f"num={num} needs {2 * num} anchor values, got {len(values)}", "anchors")
    mask = sec.get("mask", _ints, list(range(num)))
    if not mask or any(not 0 <= m < num for m in mask):
        raise sec.error(f"mask {mask} must list anchor indices in 0..{num - 1}", "mask")
    scale_x_y = sec.get("scale_x_y", float, 1.0)
    if scale_x_y <= 0:
        raise sec.error(f"scale_x_y must be positive, got {scale_x_y}", "scale_x_y")
    return {
        "type": "yolo",
        "mask": mask,
        "anchors": [(values[2 * k], values[2 * k + 1]) for k in range(num)],
        "classes": sec.positive("classes", 20),
        "scale_x_y": scale_x_y,
    }


_PARSERS: dict[str, Callable[[_Section, int], dict]] = {
    "net": _parse_net,
    "convolutional": _parse_convolutional,
    "shortcut": _parse_shortcut,
    "route": _parse_route,
    "upsample": _parse_upsample,
    "maxpool": _parse_maxpool,
    "yolo": _parse_yolo,
}


def _is_cfg_text(source: str | Path) -> bool:
    """A Path or a one-line string names a file; multi-line text is the cfg itself."""
    return isinstance(source, str) and ("\n" in source or source.lstrip().startswith("["))


def _read_source(source: str | Path) -> tuple[str, str]:
    """(text, origin): the cfg text and the name errors should give for it."""
    if _is_cfg_text(source):
        return str(source), "<darknet cfg text>"
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise AlphaPoseTrtError(f"{path}: darknet cfg file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AlphaPoseTrtError(f"{path}: cannot read darknet cfg ({exc})") from None


def parse_cfg(source: str | Path) -> list[dict]:
    """Parse a darknet cfg (a path, or the cfg text itself) into canonical layer dicts.

    The first dict is `{"type": "net", "width", "height", "channels"}`; then one dict per layer
    with every maths-relevant key present (darknet defaults filled in), `pad=1` resolved into
    `padding`, and route/shortcut references as absolute layer indices. Two cfgs that compute the
    same network therefore parse to equal lists.

    Raises:
        AlphaPoseTrtError: unknown section or key, unsupported value, or bad reference, naming the
            file and line.
    """
    text, origin = _read_source(source)
    sections = _read_sections(text, origin)
    if not sections or sections[0].kind != "net":
        raise AlphaPoseTrtError(f"{origin}: a darknet cfg must start with a [net] section")
    layers = []
    for position, section in enumerate(sections):
        if position and section.kind == "net":
            raise section.error("only the first section may be [net]")
        layers.append(_PARSERS[section.kind](section, position - 1))
        section.check_unread()
    return layers


# ----------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------


def _maxpool_geometry(size: int, stride: int, padding: int) -> tuple[int, bool, int]:
    """MaxPool2d settings (padding, ceil_mode, crop offset) that reproduce darknet's max-pool.

    Darknet pads `padding // 2` on the left/top and the rest on the right/bottom (out-of-image
    cells never win), giving (n + padding - size) // stride + 1 outputs. MaxPool2d pads
    symmetrically, so: even padding maps directly; odd padding with stride 1 pads one more on
    each side and crops the first output; odd padding with a larger stride uses ceil_mode, which
    adds the partial right-hand window, then crops to darknet's count. No Pad node either way.
    """
    if padding % 2 == 0:
        torch_padding, ceil_mode, offset = padding // 2, False, 0
    elif stride == 1:
        torch_padding, ceil_mode, offset = (padding + 1) // 2, False, 1
    else:
        torch_padding, ceil_mode, offset = padding // 2, True, 0
    if not 0 <= torch_padding <= size // 2:
        raise ValueError(f"max-pool padding {padding} is outside 0..{2 * (size // 2)} for size {size}")
    return torch_padding, ceil_mode, offset


class ConvBlock(nn.Module):
    """Darknet `[convolutional]`: conv (bias only without BN), optional BatchNorm, activation."""

    def __init__(self, in_channels: int, spec: dict) -> None:
        super().__init__()
        with_bn = spec["batch_normalize"]
        self.conv = nn.Conv2d(
            in_channels, spec["filters"], spec["size"], spec["stride"], spec["padding"],
            groups=spec["groups"], bias=not with_bn,
        )
        self.bn = nn.BatchNorm2d(spec["filters"], eps=BN_EPS) if with_bn else None
        self.act = _ACTIVATIONS[spec["activation"]]()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def darknet_tensors(self) -> list[Tensor]:
        """This layer's parameters in the order darknet stores them in a `.weights` file."""
        if self.bn is not None:
            return [self.bn.bias, self.bn.weight, self.bn.running_mean, self.bn.running_var, self.conv.weight]
        return [self.conv.bias, self.conv.weight]


CHAIN_POOL = 5  # stride-1 pools of size 4k + 1 run as k chained 5x5 pools (see MaxPool)


class MaxPool(nn.Module):
    """Darknet `[maxpool]`, including its asymmetric default padding (see `_maxpool_geometry`).

    A stride-1 pool of size 4k + 1 with centred padding (SPP's 9 and 13) runs as k chained 5x5
    pools: the same maximum over the same window (padding never wins a max), exactly, for about
    a third of the comparisons, and the compilers share the first 5x5 pool between SPP branches.
    """

    def __init__(self, size: int, stride: int, padding: int, out_hw: tuple[int, int]) -> None:
        super().__init__()
        torch_padding, ceil_mode, self.offset = _maxpool_geometry(size, stride, padding)
        chain, rest = divmod(size - 1, CHAIN_POOL - 1)
        if stride == 1 and torch_padding == size // 2 and size > CHAIN_POOL and rest == 0 and self.offset == 0:
            self.pool = nn.Sequential(*[nn.MaxPool2d(CHAIN_POOL, 1, CHAIN_POOL // 2)] * chain)
        else:
            self.pool = nn.MaxPool2d(size, stride, torch_padding, ceil_mode=ceil_mode)
        self.crop = self.offset != 0 or ceil_mode
        self.out_hw = out_hw

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(x)
        if self.crop:
            (h, w), o = self.out_hw, self.offset
            x = x[:, :, o : o + h, o : o + w]
        return x


class Upsample(nn.Module):
    """Darknet `[upsample]`: nearest-neighbour by an integer factor."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=float(self.stride), mode="nearest")


class Route(nn.Module):
    """Darknet `[route]`: concatenate earlier outputs along channels, each optionally cut to one of
    `groups` equal channel chunks (`group_id`, as in YOLOv4-tiny's CSP blocks)."""

    def __init__(self, layers: list[int], groups: int, group_id: int) -> None:
        super().__init__()
        self.layers, self.groups, self.group_id = list(layers), groups, group_id

    def forward(self, inputs: list[Tensor]) -> Tensor:
        if self.groups > 1:
            inputs = [t.chunk(self.groups, dim=1)[self.group_id] for t in inputs]
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)


class Shortcut(nn.Module):
    """Darknet `[shortcut]`: residual add of an earlier layer's output, then an activation."""

    def __init__(self, source: int, activation: str) -> None:
        super().__init__()
        self.source = source
        self.act = _ACTIVATIONS[activation]()

    def forward(self, x: Tensor, other: Tensor) -> Tensor:
        return self.act(x + other)


class YoloLayer(nn.Module):
    """Darknet `[yolo]` head decoded to rows (cx, cy, w, h, objectness, class scores...).

    Rows are ordered cell by cell (row-major) with the head's anchors innermost, as in
    AlphaPose's detector, so that score ties break the same way in NMS. The decode is built from
    split/cat on fresh tensors (no in-place slice writes: ONNX would emit ScatterND), and grid
    offsets and anchor sizes are buffers sized for the configured input.
    """

    grid: Tensor
    anchor_wh: Tensor

    def __init__(
        self, anchors: Sequence[tuple[float, float]], num_classes: int, stride: int,
        grid_hw: tuple[int, int], scale_x_y: float = 1.0,
    ) -> None:
        super().__init__()
        self.anchors = [tuple(a) for a in anchors]
        self.num_classes, self.stride, self.grid_hw, self.scale_x_y = num_classes, stride, grid_hw, scale_x_y
        h, w = grid_hw
        num_anchors = len(self.anchors)
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cells = torch.stack((gx, gy), dim=-1).reshape(h * w, 1, 2).expand(h * w, num_anchors, 2)
        sizes = torch.tensor(self.anchors, dtype=torch.float32).expand(h * w, num_anchors, 2)
        # Derived from the cfg, not learned: kept out of the state_dict.
        self.register_buffer("grid", cells.reshape(1, -1, 2).float(), persistent=False)
        self.register_buffer("anchor_wh", sizes.reshape(1, -1, 2).clone(), persistent=False)

    @property
    def num_outputs(self) -> int:
        """Rows per image: anchors x grid cells."""
        return self.grid.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[B, A*(5+C), H, W] raw head output -> Tensor[B, H*W*A, 5+C] decoded rows."""
        (h, w), num_anchors, attrs = self.grid_hw, len(self.anchors), 5 + self.num_classes
        # [B, A*attrs, H, W] -> [B, H, W, A, attrs] -> rows; -1 keeps the batch dynamic in exports.
        p = x.reshape(-1, num_anchors, attrs, h, w).permute(0, 3, 4, 1, 2)
        p = p.reshape(-1, h * w * num_anchors, attrs)
        xy, wh, scores = p.split((2, 2, 1 + self.num_classes), dim=-1)
        xy = torch.sigmoid(xy)
        if self.scale_x_y != 1.0:
            xy = xy * self.scale_x_y - (self.scale_x_y - 1.0) / 2
        xy = (xy + self.grid) * self.stride
        wh = torch.exp(wh) * self.anchor_wh
        return torch.cat((xy, wh, torch.sigmoid(scores)), dim=-1)


# ----------------------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------------------

_Shape = tuple[int, int, int]  # (channels, height, width) of one layer's output


class _Builder:
    """Turns canonical layer dicts into modules while tracking every layer's output shape.

    Why shapes: mismatched routes/shortcuts, a wrong head filter count or an input size the
    strides do not divide must fail when the model is built, naming the layer, not deep inside
    the first forward.
    """

    def __init__(self, origin: str, channels: int, img_size: int) -> None:
        self.origin, self.img_size = origin, img_size
        self.shapes: list[_Shape | None] = []  # None: a [yolo] layer, whose output is not a feature map
        self.prev: _Shape | None = (channels, img_size, img_size)

    def error(self, index: int, spec: dict, message: str) -> AlphaPoseTrtError:
        return AlphaPoseTrtError(f"{self.origin}: layer {index} [{spec['type']}]: {message}")

    def source(self, index: int, spec: dict, ref: int) -> _Shape:
        if not 0 <= ref < index:
            raise self.error(index, spec, f"layer {ref} is not an earlier layer")
        shape = self.shapes[ref]
        if shape is None:
            raise self.error(index, spec, f"cannot take the output of [yolo] layer {ref}")
        return shape

    def build(self, index: int, spec: dict) -> nn.Module:
        kind = spec.get("type")
        if kind == "route":
            return self._route(index, spec)
        if self.prev is None:
            raise self.error(index, spec, "follows a [yolo] layer; only [route] may")
        builders = {"convolutional": self._conv, "shortcut": self._shortcut, "upsample": self._upsample,
                    "maxpool": self._maxpool, "yolo": self._yolo}
        if kind not in builders:
            supported = ", ".join(["net", "route", *builders])
            raise self.error(index, spec, f"unsupported layer type (supported: {supported})")
        return builders[kind](index, spec, self.prev)

    def add(self, shape: _Shape | None) -> None:
        self.shapes.append(shape)
        self.prev = shape

    def _conv(self, index: int, spec: dict, prev: _Shape) -> nn.Module:
        c, h, w = prev
        if c % spec["groups"]:
            raise self.error(index, spec, f"{c} input channels are not divisible by groups={spec['groups']}")
        size, stride, pad = spec["size"], spec["stride"], spec["padding"]
        out = ((h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1)
        self._check_positive(index, spec, prev, out)
        self.add((spec["filters"], *out))
        return ConvBlock(c, spec)

    def _maxpool(self, index: int, spec: dict, prev: _Shape) -> nn.Module:
        c, h, w = prev
        size, stride, pad = spec["size"], spec["stride"], spec["padding"]
        out = ((h + pad - size) // stride + 1, (w + pad - size) // stride + 1)
        self._check_positive(index, spec, prev, out)
        try:
            module = MaxPool(size, stride, pad, out)
        except ValueError as exc:
            raise self.error(index, spec, str(exc)) from None
        self.add((c, *out))
        return module

    def _upsample(self, index: int, spec: dict, prev: _Shape) -> nn.Module:
        c, h, w = prev
        self.add((c, h * spec["stride"], w * spec["stride"]))
        return Upsample(spec["stride"])

    def _shortcut(self, index: int, spec: dict, prev: _Shape) -> nn.Module:
        other = self.source(index, spec, spec["from"])
        if other != prev:
            raise self.error(index, spec, f"adds layer {spec['from']} of shape {other} to shape {prev}")
        self.add(prev)
        return Shortcut(spec["from"], spec["activation"])

    def _route(self, index: int, spec: dict) -> nn.Module:
        groups = spec["groups"]
        shapes = [self.source(index, spec, ref) for ref in spec["layers"]]
        if len({s[1:] for s in shapes}) != 1:
            raise self.error(
                index, spec, f"inputs {spec['layers']} have different sizes {[s[1:] for s in shapes]} at "
                f"img_size {self.img_size}; use a multiple of the network's largest stride",
            )
        if any(s[0] % groups for s in shapes):
            channels = [s[0] for s in shapes]
            raise self.error(index, spec, f"input channels {channels} not divisible by groups={groups}")
        self.add((sum(s[0] // groups for s in shapes), *shapes[0][1:]))
        return Route(spec["layers"], groups, spec["group_id"])

    def _yolo(self, index: int, spec: dict, prev: _Shape) -> nn.Module:
        c, h, w = prev
        expected = len(spec["mask"]) * (spec["classes"] + 5)
        if c != expected:
            raise self.error(index, spec, f"gets {c} channels; {len(spec['mask'])} anchors x (5 + "
                             f"{spec['classes']} classes) need {expected}")
        if self.img_size % h or self.img_size % w or self.img_size // h != self.img_size // w:
            raise self.error(index, spec, f"grid {h}x{w} does not divide img_size {self.img_size} evenly")
        self.add(None)
        return YoloLayer(
            [spec["anchors"][m] for m in spec["mask"]], spec["classes"], self.img_size // h, (h, w),
            spec["scale_x_y"],
        )

    def _check_positive(self, index: int, spec: dict, prev: _Shape, out: tuple[int, int]) -> None:
        if min(out) <= 0:
            too_small = f"input {prev[1]}x{prev[2]} is too small (img_size {self.img_size})"
            raise self.error(index, spec, too_small)


class Darknet(nn.Module):
    """A darknet YOLO network: image batch in, decoded candidate boxes out.

    Args:
        cfg: parsed layer dicts (`parse_cfg`, `yolov3_spp_cfg`), or a cfg path / cfg text.
        img_size: square input side in pixels; default: the cfg's [net] width (= height).

    Attributes:
        img_size, channels, num_classes: input side, input channels, classes per box.
        strides: input pixels per grid cell of each [yolo] head, in cfg order.
        module_list: one module per cfg layer, in cfg order (darknet layer indices).
        cfg: the canonical layer dicts the model was built from.

    The model is put in eval mode on construction: it is an inference model, and BatchNorm in
    training mode would use batch statistics instead of the darknet running averages.
    """

    def __init__(self, cfg: str | Path | Sequence[dict], img_size: int | None = None) -> None:
        super().__init__()
        if isinstance(cfg, (str, Path)):
            origin = "<darknet cfg text>" if _is_cfg_text(cfg) else str(cfg)
            cfg = parse_cfg(cfg)
        else:
            origin = "<darknet cfg>"
        self.cfg = [dict(layer) for layer in cfg]
        if not self.cfg or self.cfg[0].get("type") != "net":
            raise AlphaPoseTrtError(f"{origin}: the first layer dict must be the [net] section")
        net, body = self.cfg[0], self.cfg[1:]
        self.img_size = self._resolve_size(origin, net, img_size)
        self.channels = net["channels"]
        builder = _Builder(origin, self.channels, self.img_size)
        modules = []
        for index, spec in enumerate(body):
            modules.append(builder.build(index, spec))
        self.module_list = nn.ModuleList(modules)
        heads = self.yolo_layers
        if not heads:
            raise AlphaPoseTrtError(f"{origin}: the network has no [yolo] layer")
        if len({h.num_classes for h in heads}) != 1:
            raise AlphaPoseTrtError(f"{origin}: [yolo] layers disagree on the number of classes")
        self.num_classes = heads[0].num_classes
        self.strides = [h.stride for h in heads]
        # Outputs that later routes/shortcuts read; only these are held during forward.
        kept: set[int] = set()
        for module in modules:
            if isinstance(module, Route):
                kept.update(module.layers)
            elif isinstance(module, Shortcut):
                kept.add(module.source)
        self._kept = frozenset(kept)
        self.eval()

    @staticmethod
    def _resolve_size(origin: str, net: dict, img_size: int | None) -> int:
        if img_size is None:
            if net["width"] != net["height"]:
                raise AlphaPoseTrtError(
                    f"{origin}: [net] is {net['width']}x{net['height']}, not square; pass img_size"
                )
            return net["width"]
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0:
            raise AlphaPoseTrtError(f"{origin}: img_size must be a positive integer, got {img_size!r}")
        return img_size

    @property
    def yolo_layers(self) -> list[YoloLayer]:
        """The detection heads in cfg order (the order of their rows in the output)."""
        return [m for m in self.module_list if isinstance(m, YoloLayer)]

    @property
    def num_outputs(self) -> int:
        """Candidate rows per image: sum over heads of anchors x grid cells."""
        return sum(h.num_outputs for h in self.yolo_layers)

    def conv_blocks(self) -> list[ConvBlock]:
        """The convolutional layers in cfg order: the order of their weights in a darknet file."""
        return [m for m in self.module_list if isinstance(m, ConvBlock)]

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[B, 3, S, S] RGB in [0, 1] -> Tensor[B, N, 5 + classes] rows
        (cx, cy, w, h in input pixels, objectness, class scores), heads in cfg order."""
        expected = (self.channels, self.img_size, self.img_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            shape = ", ".join(map(str, expected))
            raise AlphaPoseTrtError(f"Darknet input must be [B, {shape}], got {list(x.shape)}")
        kept: dict[int, Tensor] = {}
        detections = []
        for index, module in enumerate(self.module_list):
            if isinstance(module, Route):
                x = module([kept[ref] for ref in module.layers])
            elif isinstance(module, Shortcut):
                x = module(x, kept[module.source])
            elif isinstance(module, YoloLayer):
                detections.append(module(x))
            else:
                x = module(x)
            if index in self._kept:
                kept[index] = x
        return torch.cat(detections, dim=1)


# ----------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------


class DarknetHeader(NamedTuple):
    """The header of a darknet `.weights` file."""

    major: int
    minor: int
    revision: int
    seen: int  # images seen in training; informational only


def _seen_bytes(major: int, minor: int) -> int:
    # Darknet stores `seen` as a size_t from version 0.2 on, an int before; it also guards
    # against garbage version numbers with the < 1000 checks.
    return 8 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 4


def _float_count(model: Darknet) -> int:
    return sum(t.numel() for block in model.conv_blocks() for t in block.darknet_tensors())


def darknet_weights_size(model: Darknet) -> int:
    """Exact byte size of this model's darknet `.weights` file (20-byte 0.2 header + float32s).

    The downloader uses it to recognise a complete file before parsing it.
    """
    return _VERSION_HEADER.size + _seen_bytes(*_WRITE_VERSION[:2]) + 4 * _float_count(model)


def _read_header(path: Path) -> tuple[DarknetHeader, int]:
    """(header, header size in bytes) of a weights file."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_VERSION_HEADER.size + 8)
    except FileNotFoundError:
        raise AlphaPoseTrtError(f"{path}: darknet weights file not found") from None
    except OSError as exc:
        raise AlphaPoseTrtError(f"{path}: cannot read darknet weights ({exc})") from None
    if len(head) < _VERSION_HEADER.size:
        raise AlphaPoseTrtError(f"{path}: too short for a darknet weights file ({len(head)} bytes)")
    major, minor, revision = _VERSION_HEADER.unpack_from(head)
    seen_size = _seen_bytes(major, minor)
    size = _VERSION_HEADER.size + seen_size
    if len(head) < size:
        raise AlphaPoseTrtError(f"{path}: truncated darknet weights header ({len(head)} of {size} bytes)")
    (seen,) = struct.unpack_from("<q" if seen_size == 8 else "<i", head, _VERSION_HEADER.size)
    return DarknetHeader(major, minor, revision, seen), size


def load_darknet_weights(model: Darknet, path: str | Path) -> DarknetHeader:
    """Load a darknet `.weights` file into `model` (any device/dtype) and return its header.

    Layout: int32 major, minor, revision; `seen` (int64 from version 0.2, else int32); then per
    convolutional layer in cfg order: with BN beta, gamma, running mean, running variance, conv
    weights; without BN bias, conv weights; all float32 little-endian.

    Raises:
        AlphaPoseTrtError: missing file, or a float count that does not match the cfg exactly
            (a truncated download, or weights of another network).
    """
    path = Path(path)
    header, header_size = _read_header(path)
    payload = path.stat().st_size - header_size
    expected = _float_count(model)
    if payload != 4 * expected:
        stray = f" and {payload % 4} stray bytes" if payload % 4 else ""
        raise AlphaPoseTrtError(
            f"{path}: expected {expected} float32 weights after the {header_size}-byte header for this "
            f"cfg, found {payload // 4}{stray} (truncated download, or weights of another network)"
        )
    floats = np.fromfile(path, dtype="<f4", offset=header_size).astype(np.float32, copy=False)
    floats = torch.from_numpy(floats)
    offset = 0
    with torch.no_grad():
        for block in model.conv_blocks():
            for tensor in block.darknet_tensors():
                n = tensor.numel()
                tensor.copy_(floats[offset : offset + n].view_as(tensor))
                offset += n
    return header


def save_darknet_weights(model: Darknet, path: str | Path, seen: int = 0) -> None:
    """Write `model`'s weights as a darknet `.weights` file (version 0.2.0), atomically.

    Why: tests and benchmarks need realistic weight files without downloading 250 MB, and a
    round trip through this writer proves the reader's layout.
    """
    if isinstance(seen, bool) or not isinstance(seen, int) or not 0 <= seen < 2**63:
        raise AlphaPoseTrtError(f"{path}: 'seen' must be a non-negative 64-bit integer, got {seen!r}")
    with atomic_write(path, "wb") as fh:
        fh.write(_VERSION_HEADER.pack(*_WRITE_VERSION))
        fh.write(struct.pack("<q", seen))
        for block in model.conv_blocks():
            for tensor in block.darknet_tensors():
                values = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
                fh.write(values.astype("<f4").tobytes())


# ----------------------------------------------------------------------------------------------
# built-in YOLOv3-SPP
# ----------------------------------------------------------------------------------------------


class _CfgWriter:
    """Appends canonical layer dicts, resolving darknet's relative references to absolute ones."""

    def __init__(self, size: int) -> None:
        self.layers: list[dict] = [{"type": "net", "width": size, "height": size, "channels": 3}]

    @property
    def last(self) -> int:
        """Index of the most recent layer (darknet numbering: [net] excluded)."""
        return len(self.layers) - 2

    def conv(self, filters: int, size: int, stride: int = 1, head: bool = False) -> None:
        self.layers.append({
            "type": "convolutional", "filters": filters, "size": size, "stride": stride,
            "padding": size // 2, "groups": 1, "batch_normalize": not head,
            "activation": "linear" if head else "leaky",
        })

    def shortcut(self, back: int) -> None:
        self.layers.append({"type": "shortcut", "from": self.last + 1 - back, "activation": "linear"})

    def route(self, *layers: int) -> None:
        self.layers.append({"type": "route", "layers": list(layers), "groups": 1, "group_id": 0})

    def maxpool(self, size: int) -> None:
        self.layers.append({"type": "maxpool", "size": size, "stride": 1, "padding": size - 1})

    def upsample(self) -> None:
        self.layers.append({"type": "upsample", "stride": 2})

    def yolo(self, mask: Sequence[int]) -> None:
        self.layers.append({
            "type": "yolo", "mask": list(mask), "anchors": [(float(w), float(h)) for w, h in YOLOV3_ANCHORS],
            "classes": COCO_NUM_CLASSES, "scale_x_y": 1.0,
        })


def _spp(cfg: _CfgWriter) -> None:
    """Spatial pyramid pooling: stride-1 max-pools of several sizes on one map, concatenated
    (largest pool first) with the map itself."""
    source, pools = cfg.last, []
    for size in _SPP_POOL_SIZES:
        if pools:
            cfg.route(source)
        cfg.maxpool(size)
        pools.append(cfg.last)
    cfg.route(*reversed(pools), source)


def _detection_block(cfg: _CfgWriter, filters: int, spp: bool, mask: Sequence[int]) -> None:
    """Alternating 1x1 (filters) / 3x3 (2x filters) convs, optionally with SPP after the third,
    then the linear output conv and its [yolo] layer."""
    cfg.conv(filters, 1)
    cfg.conv(2 * filters, 3)
    cfg.conv(filters, 1)
    if spp:
        _spp(cfg)
        cfg.conv(filters, 1)
    cfg.conv(2 * filters, 3)
    cfg.conv(filters, 1)
    cfg.conv(2 * filters, 3)
    cfg.conv(len(mask) * (COCO_NUM_CLASSES + 5), 1, head=True)
    cfg.yolo(mask)


def _yolov3_spp_layers(stages: Sequence[tuple[int, int]]) -> list[dict]:
    """YOLOv3-SPP's layer dicts for a backbone of (filters, residual blocks) stages.

    The stem has half the first stage's filters; the three heads (strides 32, 16, 8) have half
    the filters of the last three stages, and the two finer heads take skips from the ends of
    the second- and third-last stages. Smaller `stages` give the same topology in miniature.
    """
    cfg = _CfgWriter(DEFAULT_IMG_SIZE)
    cfg.conv(stages[0][0] // 2, 3)
    stage_outputs = []
    for filters, blocks in stages:
        cfg.conv(filters, 3, stride=2)
        for _ in range(blocks):
            cfg.conv(filters // 2, 1)
            cfg.conv(filters, 3)
            cfg.shortcut(3)
        stage_outputs.append(cfg.last)
    masks = [list(range(start, start + 3)) for start in (6, 3, 0)]  # coarsest head: largest anchors
    _detection_block(cfg, stages[-1][0] // 2, spp=True, mask=masks[0])
    for k in (1, 2):
        cfg.route(cfg.last - 3)  # the 1x1 conv before the previous head's last 3x3
        cfg.conv(stages[-1 - k][0] // 2, 1)
        cfg.upsample()
        cfg.route(cfg.last, stage_outputs[-1 - k])
        _detection_block(cfg, stages[-1 - k][0] // 2, spp=False, mask=masks[k])
    return cfg.layers


def yolov3_spp_cfg() -> list[dict]:
    """The canonical layer dicts of darknet's `yolov3-spp.cfg` (as `parse_cfg` returns them),
    generated from the architecture rather than pasted: Darknet-53, SPP, three FPN heads."""
    return _yolov3_spp_layers(_DARKNET53_STAGES)


def build_yolov3_spp(img_size: int = DEFAULT_IMG_SIZE) -> Darknet:
    """The YOLOv3-SPP COCO detector AlphaPose uses (random weights until loaded)."""
    return Darknet(yolov3_spp_cfg(), img_size=img_size)
