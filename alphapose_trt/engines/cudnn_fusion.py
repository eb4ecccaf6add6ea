"""Each convolution with its bias, activation and residual join as one cuDNN kernel.

Why: a compiled engine runs each convolution as a cuDNN kernel followed by an Inductor kernel
that adds the bias and applies the activation (and the residual), which reads and writes the
whole output once more: at pose batch 64 those passes took 1.2 of 3.2 ms of kernels (H100,
benchmarks/README.md, session 11). The cuDNN frontend builds conv -> bias -> [+ residual] ->
activation [-> + residual] as one operation graph that cuDNN runs as one generated kernel. Inside
the compiled engines, where Inductor compiles everything around this op (session 14, H100): the
detector at batch 1 in 0.90 ms against 1.07-1.09, at batch 8 2,181-2,232 against 2,116-2,135
images/s; the pose net at batch 1 in 0.58-0.60 ms against 0.68-0.74, at batch 64 21,283-21,297
against 19,522-19,574 crops/s.

It needs the `nvidia-cudnn-frontend` package (extra `[cudnn]`) and fp16 on CUDA. Elsewhere
`conv_act` computes the same with PyTorch ops, the reference the surgery is tested against.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from alphapose_trt.engines.padding import RGB_CHANNELS
from alphapose_trt.engines.rgb_conv import activation_slope
from alphapose_trt.models.darknet import ConvBlock, Darknet, Shortcut
from alphapose_trt.models.fastpose import DUC, Bottleneck, FastPose

RELU, LINEAR = 0.0, 1.0  # activations as the slope of their negative side (else a leaky ReLU)
PLANS = 4  # per layer shape, the cuDNN heuristics' first plans are built and timed; the fastest runs


@functools.cache
def frontend() -> Any | None:
    """The cuDNN frontend's Python module, loaded against the cuDNN library torch uses, or None
    where it is not installed."""
    try:
        import nvidia.cudnn

        for lib in sorted(glob.glob(os.path.join(list(nvidia.cudnn.__path__)[0], "lib", "libcudnn.so*"))):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError, IndexError):
        pass  # a torch built with its own cuDNN: the frontend finds that one
    try:
        import cudnn
    except ImportError:
        return None
    return cudnn


def _out_shape(x: Tensor, weight: Tensor, stride: int, padding: int) -> tuple[int, ...]:
    hw = ((n + 2 * padding - k) // stride + 1 for n, k in zip(x.shape[2:], weight.shape[2:]))
    return (x.shape[0], weight.shape[0], *hw)


def epilogue(y: Tensor, bias: Tensor, residual: Tensor | None, slope: float, before: bool) -> Tensor:
    """What the fused kernel applies to a convolution's output y, as PyTorch ops: + bias
    [+ residual], the activation as its negative slope [, + residual]."""
    y = y + bias.reshape(1, -1, 1, 1)
    if residual is not None and before:
        y = y + residual
    y = torch.where(y >= 0, y, y * slope)
    return y + residual if residual is not None and not before else y


def reference(x: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None, slope: float, before: bool,
              stride: int, padding: int) -> Tensor:
    """act(conv(x) + bias [+ residual]) [+ residual] with PyTorch ops, the epilogue in fp32 as in the
    frontend graph."""
    y = F.conv2d(x, weight, None, stride, padding).float()
    r = None if residual is None else residual.float()
    return epilogue(y, bias.float(), r, slope, before).to(x.dtype).contiguous(memory_format=torch.channels_last)


@dataclass
class _Built:
    graph: Any
    tensors: tuple  # the graph's x, weight, bias, residual (or None), output
    workspace_bytes: int  # allocated per call, in stream order: engines on other streams may share the graph
    plan: int


_handles: dict[int, Any] = {}
_built: dict[tuple, _Built | None] = {}  # per layer shape and device, shared by its layers; None: no fused kernel


def _build(cudnn: Any, handle: Any, x: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None, out: Tensor,
           slope: float, before: bool, stride: int, padding: int) -> _Built:
    """The frontend graph for these tensors' shapes and strides, with the fastest of the first
    PLANS plans (timed on the GPU, except while a CUDA graph is being captured: then the first)."""
    half = cudnn.data_type.HALF
    graph = cudnn.pygraph(io_data_type=half, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=handle)

    def tensor(name: str, t: Tensor) -> Any:
        return graph.tensor(name=name, dim=list(t.shape), stride=list(t.stride()), data_type=half)

    tx, tw, tb = tensor("x", x), tensor("w", weight), tensor("b", bias)
    tz = None if residual is None else tensor("z", residual)
    y = graph.bias(name="bias", input=graph.conv_fprop(image=tx, weight=tw, padding=[padding] * 2,
                                                        stride=[stride] * 2, dilation=[1, 1]), bias=tb)
    if tz is not None and before:
        y = graph.add(name="residual", a=y, b=tz)
    if slope == RELU:
        y = graph.relu(name="act", input=y)
    elif slope != LINEAR:
        y = graph.leaky_relu(name="act", input=y, negative_slope=slope)
    if tz is not None and not before:
        y = graph.add(name="shortcut", a=y, b=tz)
    y.set_output(True).set_data_type(half).set_dim(list(out.shape)).set_stride(list(out.stride()))
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    plans = []
    for plan in range(min(graph.get_execution_plan_count(), PLANS)):
        try:
            graph.build_plan_at_index(plan)
            plans.append((plan, graph.get_workspace_size_plan_at_index(plan)))
        except Exception:  # noqa: BLE001 - a plan this GPU's cuDNN declines; another may build
            continue
    if not plans:
        raise RuntimeError(f"cuDNN builds no fused kernel for input {tuple(x.shape)}, weight {tuple(weight.shape)}")
    size = max(size for _, size in plans) + 1
    workspace = torch.empty(size, device=x.device, dtype=torch.uint8)
    built = _Built(graph, (tx, tw, tb, tz, y), size, plans[0][0])
    if len(plans) > 1 and not torch.cuda.is_current_stream_capturing():
        pack = {tx: x, tw: weight, tb: bias, y: out, **({tz: residual} if tz is not None else {})}
        times = {plan: event_time_ms(lambda: graph.execute_plan_at_index(pack, workspace, plan, handle=handle))
                 for plan, _ in plans}
        built.plan = min(times, key=times.get)
    return built


def event_time_ms(fn: Any, reps: int = 5) -> float:
    """Device time per call of `fn` over `reps` back-to-back calls between two CUDA events (after
    one call that is not timed): how a layer shape's plans are compared."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


@torch.library.custom_op("alphapose_trt::conv_act", mutates_args=(), tags=(torch.Tag.needs_fixed_stride_order,))
def conv_act(x: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None, slope: float, before: bool,
             stride: int, padding: int) -> Tensor:
    """act(conv(x) + bias [+ residual]) [+ residual], channels_last: the residual joins before the
    activation (`before`: a ResNet bottleneck's ReLU) or after it (a darknet shortcut). One cuDNN
    kernel for fp16 on CUDA with the frontend installed; PyTorch ops otherwise. Inductor sees an
    opaque op and compiles everything around it."""
    cudnn = frontend() if x.is_cuda and x.dtype == torch.float16 else None
    if cudnn is None:
        return reference(x, weight, bias, residual, slope, before, stride, padding)
    device = x.device.index if x.device.index is not None else torch.cuda.current_device()
    if device not in _handles:
        with torch.cuda.device(device):
            _handles[device] = cudnn.create_handle()
    handle = _handles[device]
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(device).cuda_stream)
    out = torch.empty(_out_shape(x, weight, stride, padding), device=x.device, dtype=x.dtype,
                      memory_format=torch.channels_last)
    key = (device, tuple(x.shape), x.stride(), tuple(weight.shape), weight.stride(), bias.stride(),
           None if residual is None else residual.stride(), slope, before, stride, padding)
    if key not in _built:
        try:
            _built[key] = _build(cudnn, handle, x, weight, bias, residual, out, slope, before, stride, padding)
        except Exception as exc:  # noqa: BLE001 - e.g. a GPU without cuDNN's runtime fusion: run this shape unfused
            _built[key] = None
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"cuDNN fused kernel unavailable for input {tuple(x.shape)}, weight {tuple(weight.shape)}"
                          f" ({reason}); running it unfused", stacklevel=2)
    built = _built[key]
    if built is None:
        return reference(x, weight, bias, residual, slope, before, stride, padding)
    tx, tw, tb, tz, ty = built.tensors
    pack = {tx: x, tw: weight, tb: bias, ty: out, **({tz: residual} if tz is not None else {})}
    workspace = torch.empty(built.workspace_bytes, device=x.device, dtype=torch.uint8)
    built.graph.execute_plan_at_index(pack, workspace, built.plan, handle=handle)
    return out


@conv_act.register_fake
def _(x, weight, bias, residual, slope, before, stride, padding):
    return x.new_empty(_out_shape(x, weight, stride, padding)).contiguous(memory_format=torch.channels_last)


class ConvAct(nn.Module):
    """A convolution with its BatchNorm folded in, its activation and an optional residual, run by
    `conv_act`. join: where a residual given to forward joins, "before" or "after" the activation."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, slope: float, join: str = "after") -> None:
        super().__init__()
        if conv.groups != 1 or conv.dilation != (1, 1) or len(set(conv.stride)) != 1 or len(set(conv.padding)) != 1:
            raise ValueError(f"conv_act runs square, ungrouped, undilated convolutions, not {conv}")
        weight = conv.weight.detach().float()
        bias = weight.new_zeros(weight.shape[0]) if conv.bias is None else conv.bias.detach().float()
        if bn is not None:
            weight, bias = fuse_conv_bn_weights(weight, bias, bn.running_mean.float(), bn.running_var.float(),
                                                bn.eps, bn.weight.detach().float(), bn.bias.detach().float())
        weight = weight.detach().to(conv.weight.dtype).contiguous(memory_format=torch.channels_last)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias.detach().to(conv.weight.dtype).reshape(1, -1, 1, 1))
        self.slope, self.before = slope, join == "before"
        self.stride, self.padding = conv.stride[0], conv.padding[0]

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if residual is not None:
            residual = residual.contiguous(memory_format=torch.channels_last)
        return conv_act(x, self.weight, self.bias, residual, self.slope, self.before, self.stride, self.padding)


class FusedBottleneck(nn.Module):
    """`Bottleneck` with each convolution a `ConvAct`; where no squeeze-excitation sits between the
    third convolution and the residual, the residual joins inside that convolution's kernel."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        self.conv1 = ConvAct(block.conv1, block.bn1, RELU)
        self.conv2 = ConvAct(block.conv2, block.bn2, RELU)
        self.se = block.se
        self.conv3 = ConvAct(block.conv3, block.bn3, LINEAR if self.se is not None else RELU, join="before")
        down = block.downsample
        self.downsample = None if down is None else ConvAct(down[0], down[1], LINEAR)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        residual = x if self.downsample is None else self.downsample(x)
        if self.se is None:
            return self.conv3(out, residual)
        return torch.relu(self.se(self.conv3(out)) + residual)


class JoinedShortcut(Shortcut):
    """A linear darknet shortcut computed inside the kernel of the convolution before it (`conv`
    takes the residual as its second argument), whose place in the layer list an Identity takes:
    the network hands this the convolution's input and the shortcut's source."""

    def __init__(self, conv: nn.Module, shortcut: Shortcut) -> None:
        super().__init__(shortcut.source, "linear")
        self.conv = conv

    def forward(self, x: Tensor, other: Tensor) -> Tensor:
        return self.conv(x, other)


def fuse_convs(module: nn.Module, join_shortcuts: bool = True) -> int:
    """Replace, in place, the convolutions `conv_act` runs with their `ConvAct`; returns how many.

    FastPose: every bottleneck and DUC convolution (the RGB stem and the heatmap convolution stay).
    Darknet: every block with a ReLU, a leaky ReLU or no activation, except those reading RGB and
    the (padded) heads; with `join_shortcuts`, each linear shortcut that follows one is joined into
    its kernel unless the block's own output is read again (otherwise Inductor adds it: an A/B for
    the shapes where, at detector batch 8, the joined graphs' plans were no faster than cuDNN plus
    its epilogue, session 14).
    """
    count = 0
    if isinstance(module, FastPose):
        for name in ("layer1", "layer2", "layer3", "layer4"):
            layer = getattr(module.preact, name)
            for i, block in enumerate(layer):
                layer[i] = FusedBottleneck(block)
                count += 3 + (block.downsample is not None)
        for duc in (m for m in module.modules() if isinstance(m, DUC)):
            duc.conv, duc.bn, duc.relu = ConvAct(duc.conv, duc.bn, RELU), nn.Identity(), nn.Identity()
            count += 1
    elif isinstance(module, Darknet):
        layers = module.module_list
        for i, block in enumerate(layers):
            plain = isinstance(block, ConvBlock) and type(block.conv) is nn.Conv2d
            if plain and block.conv.in_channels != RGB_CHANNELS:
                slope = activation_slope(block.act)
                if slope is not None:
                    layers[i] = ConvAct(block.conv, block.bn, slope)
                    count += 1
        for i in range(len(layers) - 1 if join_shortcuts else 0):
            conv, shortcut = layers[i], layers[i + 1]
            if (isinstance(conv, ConvAct) and isinstance(shortcut, Shortcut) and isinstance(shortcut.act, nn.Identity)
                    and i not in module._kept):
                layers[i], layers[i + 1] = nn.Identity(), JoinedShortcut(conv, shortcut)
    return count
