"""The detector's first layer (conv 3 -> 32, BatchNorm, leaky ReLU) as one Triton kernel.

Why: that layer reads 3 channels at 608x608, which suits no tensor-core kernel. cuDNN spent
0.457 ms on it at batch 8 (0.14 of its roofline, `benchmarks/conv_layers.py`, H100), and
Inductor's separate bias-and-activation kernel another 0.126 ms to read and write its 189 MB
output again: 16 % of the compiled detector's 3.7 ms. Its 27 multiply-adds per output value fit
plain CUDA cores. A kernel that reads the 3 input channels and writes the activated output once,
channels_last, is bound by that one write (~0.06 ms at batch 8 at HBM bandwidth).

`fuse_rgb_blocks` folds BatchNorm into the convolution and swaps each such block of a Darknet
model for `RGBConvBlock`. On CUDA that runs `rgb_conv`; elsewhere it runs the same arithmetic
with `F.conv2d`, which is also the reference the tests hold the kernel to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn

from alphapose_trt.models.darknet import ConvBlock

RGB_CHANNELS = 3
BLOCK_W = 64  # output pixels along a row per program
# Activations the kernel applies besides leaky ReLU, as the slope for negative values.
_SLOPES = {nn.ReLU: 0.0, nn.Identity: 1.0}


@triton.jit
def _rgb_conv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    height, width, out_height, out_width,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    slope,
    CIN: tl.constexpr, COUT: tl.constexpr, COUT_P: tl.constexpr,
    K: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program: BLOCK output pixels of one row, every output channel, accumulated in fp32."""
    row = tl.program_id(0)
    n = row // out_height
    ho = row % out_height
    wo = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    co = tl.arange(0, COUT_P)
    acc = tl.zeros((BLOCK, COUT_P), dtype=tl.float32)
    for c in tl.static_range(CIN):
        for kh in tl.static_range(K):
            hi = ho * STRIDE - PAD + kh
            for kw in tl.static_range(K):
                wi = wo * STRIDE - PAD + kw
                inside = (wi >= 0) & (wi < width) & (hi >= 0) & (hi < height) & (wo < out_width)
                xv = tl.load(x_ptr + n * sxn + c * sxc + hi * sxh + wi * sxw, mask=inside, other=0.0)
                wv = tl.load(w_ptr + ((co * CIN + c) * K + kh) * K + kw, mask=co < COUT, other=0.0)
                acc += xv.to(tl.float32)[:, None] * wv.to(tl.float32)[None, :]
    acc += tl.load(b_ptr + co, mask=co < COUT, other=0.0).to(tl.float32)[None, :]
    acc = tl.where(acc >= 0, acc, acc * slope)
    out = y_ptr + n * syn + ho * syh + wo[:, None] * syw + co[None, :] * syc
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=(wo[:, None] < out_width) & (co[None, :] < COUT))


def rgb_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int,
             slope: float) -> torch.Tensor:
    """conv2d(x, weight, bias, stride, padding), then x if x >= 0 else slope * x, as one kernel.

    x: (N, C, H, W) in any layout, C small; weight (Cout, C, K, K); returns (N, Cout, Ho, Wo)
    channels_last in x's dtype.
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
        CIN=cin, COUT=cout, COUT_P=1 << (cout - 1).bit_length(), K=k, STRIDE=stride, PAD=padding, BLOCK=BLOCK_W,
    )
    return y


class RGBConvBlock(nn.Module):
    """A `ConvBlock` reading RGB with its BatchNorm folded in: `rgb_conv` on CUDA."""

    def __init__(self, block: ConvBlock, slope: float) -> None:
        super().__init__()
        conv = block.conv
        weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
        if block.bn is not None:
            bn = block.bn
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias.detach() - bn.running_mean * scale + (0 if bias is None else bias * scale)
            weight = weight * scale[:, None, None, None]
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("bias", torch.zeros(conv.out_channels) if bias is None else bias.clone())
        self.stride, self.padding, self.slope = conv.stride[0], conv.padding[0], slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return rgb_conv(x, self.weight, self.bias, self.stride, self.padding, self.slope)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return torch.where(y >= 0, y, y * self.slope)


def _slope(act: nn.Module) -> float | None:
    if isinstance(act, nn.LeakyReLU):
        return act.negative_slope
    return _SLOPES.get(type(act))


def fuse_rgb_blocks(module: nn.Module) -> int:
    """Replace, in place, each Darknet block whose convolution reads RGB (ungrouped, square kernel,
    equal strides and paddings, no dilation) and whose activation is leaky ReLU, ReLU or linear
    with its `RGBConvBlock`; returns how many."""
    replacements = []
    for name, block in module.named_modules():
        if not isinstance(block, ConvBlock):
            continue
        conv, slope = block.conv, _slope(block.act)
        if (conv.in_channels != RGB_CHANNELS or conv.groups != 1 or slope is None or conv.dilation != (1, 1)
                or len(set(conv.kernel_size)) != 1 or len(set(conv.stride)) != 1 or len(set(conv.padding)) != 1
                or conv.padding_mode != "zeros"):
            continue
        replacements.append((name, RGBConvBlock(block, slope)))
    for name, fused in replacements:
        parent, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent), attr, fused)
    return len(replacements)
