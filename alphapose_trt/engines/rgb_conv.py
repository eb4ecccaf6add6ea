"""The models' first convolution (reading RGB) with its BatchNorm and activation as one Triton kernel.

Why: a convolution reading 3 channels suits no tensor-core kernel of cuDNN. The detector's
(3 -> 32, 3x3, at 608x608) took 0.457 ms at batch 8, 0.14 of its roofline (H100,
`benchmarks/conv_layers.py`), and Inductor's separate bias-and-activation kernel another 0.126 ms
to read and write its 189 MB output again: 16 % of the compiled detector's 3.7 ms. The pose
net's (3 -> 64, 7x7, stride 2) took 0.305 ms at batch 64. Here one kernel gathers the input
patches (channels x kernel taps, 27 or 147 values per output pixel) into a tile, multiplies it
with the weights on tensor cores (`tl.dot`, fp32 accumulation), adds the bias, applies the
activation and writes the output once, channels_last. Its bound is that one write (~0.06 ms for
the detector at batch 8).

`fuse_rgb_convs` folds BatchNorm into the weights and swaps the detector's first Darknet block
and the pose net's stem convolution for `RGBConv`. On CUDA that runs `rgb_conv`; elsewhere it
runs the same arithmetic with `F.conv2d`, the reference the tests hold the kernel to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from alphapose_trt.engines.padding import RGB_CHANNELS
from alphapose_trt.models.darknet import ConvBlock
from alphapose_trt.models.fastpose import SEResNet

BLOCK_W = 32  # output pixels along a row per program: both models' rows (608, 96) are multiples of 32, not 64
BLOCK_TAPS = 32  # (channel, kernel row, kernel column) taps per tile of the product
MIN_DOT = 16  # tl.dot needs every dimension at least this large


@triton.jit
def _rgb_conv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    height, width, out_height, out_width,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    slope,
    TAPS: tl.constexpr, COUT: tl.constexpr, COUT_P: tl.constexpr, K: tl.constexpr, STRIDE: tl.constexpr,
    PAD: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
):
    """One program: BLOCK output pixels of one output row, every output channel. TAPS = input
    channels x K x K, the length of each pixel's patch."""
    row = tl.program_id(0)
    n = (row // out_height).to(tl.int64)  # image offsets pass 2**31 elements beyond ~180 detector images
    ho = row % out_height
    wo = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    co = tl.arange(0, COUT_P)
    acc = tl.zeros((BLOCK, COUT_P), dtype=tl.float32)
    for start in tl.static_range(0, TAPS, BLOCK_K):
        tap = start + tl.arange(0, BLOCK_K)
        c, kh, kw = tap // (K * K), (tap // K) % K, tap % K
        hi = ho * STRIDE - PAD + kh
        wi = wo[:, None] * STRIDE - PAD + kw[None, :]
        tap_ok = (tap < TAPS) & (hi >= 0) & (hi < height)
        inside = tap_ok[None, :] & (wi >= 0) & (wi < width) & (wo < out_width)[:, None]
        patches = tl.load(x_ptr + n * sxn + (c * sxc + hi * sxh)[None, :] + wi * sxw, mask=inside, other=0.0)
        weights = tl.load(w_ptr + co[None, :] * TAPS + tap[:, None],
                          mask=(tap < TAPS)[:, None] & (co < COUT)[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(patches, weights, acc, input_precision="ieee")
        else:
            acc = tl.dot(patches.to(tl.float16), weights.to(tl.float16), acc)
    acc += tl.load(b_ptr + co, mask=co < COUT, other=0.0).to(tl.float32)[None, :]
    acc = tl.where(acc >= 0, acc, acc * slope)
    out = y_ptr + n * syn + ho * syh + wo[:, None] * syw + co[None, :] * syc
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=(wo[:, None] < out_width) & (co[None, :] < COUT))


def rgb_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int,
             slope: float) -> torch.Tensor:
    """conv2d(x, weight, bias, stride, padding), then y if y >= 0 else slope * y, as one kernel.

    x: (N, C, H, W) in any layout, C small; weight (Cout, C, K, K); returns (N, Cout, Ho, Wo)
    channels_last in x's dtype. fp16 multiplies in fp16 on tensor cores, fp32 in true fp32.
    """
    weight = weight.contiguous()  # the kernel indexes it densely; an engine may have made it channels_last
    n, cin, height, width = x.shape
    cout, _, k, _ = weight.shape
    out_height = (height + 2 * padding - k) // stride + 1
    out_width = (width + 2 * padding - k) // stride + 1
    y = torch.empty((n, cout, out_height, out_width), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    grid = (n * out_height, -(-out_width // BLOCK_W))
    _rgb_conv_kernel[grid](
        x, weight, bias, y, height, width, out_height, out_width, *x.stride(), *y.stride(), slope,
        TAPS=cin * k * k, COUT=cout, COUT_P=max(MIN_DOT, 1 << (cout - 1).bit_length()), K=k, STRIDE=stride, PAD=padding,
        BLOCK=BLOCK_W, BLOCK_K=BLOCK_TAPS, IEEE=x.dtype == torch.float32,
    )
    return y


class RGBConv(nn.Module):
    """`conv`, then `bn` (folded into the weights and bias), then y if y >= 0 else slope * y:
    `rgb_conv` on CUDA, `F.conv2d` elsewhere."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, slope: float) -> None:
        super().__init__()
        weight, bias = conv.weight, conv.bias
        if bn is not None:
            weight, bias = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        self.register_buffer("weight", weight.detach().contiguous())
        self.register_buffer("bias", torch.zeros(conv.out_channels) if bias is None else bias.detach().clone())
        self.stride, self.padding, self.slope = conv.stride[0], conv.padding[0], slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return rgb_conv(x, self.weight, self.bias, self.stride, self.padding, self.slope)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return torch.where(y >= 0, y, y * self.slope)


def _fits(conv: nn.Conv2d) -> bool:
    """An ungrouped RGB convolution with a square kernel, one stride, one zero padding."""
    return (conv.in_channels == RGB_CHANNELS and conv.groups == 1 and conv.dilation == (1, 1)
            and len(set(conv.kernel_size)) == 1 and len(set(conv.stride)) == 1 and len(set(conv.padding)) == 1
            and conv.padding_mode == "zeros")


def _slope(act: nn.Module) -> float | None:
    """The activation as the slope of its negative side, or None where the kernel has none."""
    if isinstance(act, nn.LeakyReLU):
        return act.negative_slope
    return {nn.ReLU: 0.0, nn.Identity: 1.0}.get(type(act))


def fuse_rgb_convs(module: nn.Module) -> int:
    """Replace, in place, the RGB convolutions the kernel covers with their `RGBConv`: Darknet
    blocks (conv, BatchNorm, leaky ReLU / ReLU / linear) and the pose net's stem (conv1, bn1,
    then ReLU, which stays in its forward and changes nothing after the kernel's). Returns how
    many."""
    count = 0
    for name, block in list(module.named_modules()):
        slope = _slope(block.act) if isinstance(block, ConvBlock) else None
        if slope is not None and _fits(block.conv):
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent), attr, RGBConv(block.conv, block.bn, slope))
            count += 1
        elif isinstance(block, SEResNet) and _fits(block.conv1):
            block.conv1, block.bn1 = RGBConv(block.conv1, block.bn1, 0.0), nn.Identity()
            count += 1
    return count
