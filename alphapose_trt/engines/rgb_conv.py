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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from alphapose_trt.engines.padding import RGB_CHANNELS
from alphapose_trt.models.darknet import ConvBlock
from alphapose_trt.models.fastpose import SEResNet

MIN_DOT = 16  # tl.dot needs every dimension at least this large


@dataclass(frozen=True)
class TileConfig:
    """One program's tile: `rows` output rows x `block_w` pixels of each, every output channel,
    `block_taps` patch values per step of the product (unrolled, so no pipeline stages); the
    launch's warps."""

    rows: int = 1
    block_w: int = 32
    block_taps: int = 32
    num_warps: int = 4


DEFAULT_TILE = TileConfig(rows=4)  # within 4 % of the fastest tile in all four cases on the H100 (session 12)


@triton.jit
def _rgb_conv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    rows_total, height, width, out_height, out_width,
    sxn, sxc, sxh, sxw, swo, swc, swh, sww, syn, syc, syh, syw,
    slope,
    CIN: tl.constexpr, COUT: tl.constexpr, COUT_P: tl.constexpr, K: tl.constexpr, STRIDE: tl.constexpr,
    PAD: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
):
    """One program: ROWS output rows (of any images) x BLOCK_W pixels, every output channel.
    A patch's taps run (kernel row, kernel column, channel), CIN x K x K of them."""
    TAPS: tl.constexpr = CIN * K * K
    pix = tl.arange(0, ROWS * BLOCK_W)
    row = tl.program_id(0) * ROWS + pix // BLOCK_W  # over all images' output rows
    wo = tl.program_id(1) * BLOCK_W + pix % BLOCK_W
    n = (row // out_height).to(tl.int64)  # image offsets pass 2**31 elements beyond ~180 detector images
    ho = row % out_height
    pixel_ok = (row < rows_total) & (wo < out_width)
    co = tl.arange(0, COUT_P)
    acc = tl.zeros((ROWS * BLOCK_W, COUT_P), dtype=tl.float32)
    for start in tl.static_range(0, TAPS, BLOCK_K):
        tap = start + tl.arange(0, BLOCK_K)
        kh, kw, c = tap // (CIN * K), (tap // CIN) % K, tap % CIN
        hi = ho[:, None] * STRIDE - PAD + kh[None, :]
        wi = wo[:, None] * STRIDE - PAD + kw[None, :]
        inside = (pixel_ok[:, None] & (tap < TAPS)[None, :] & (hi >= 0) & (hi < height) & (wi >= 0)
                  & (wi < width))
        patches = tl.load(x_ptr + n[:, None] * sxn + (c * sxc)[None, :] + hi * sxh + wi * sxw, mask=inside, other=0.0)
        weights = tl.load(w_ptr + co[None, :] * swo + (c * swc + kh * swh + kw * sww)[:, None],
                          mask=(tap < TAPS)[:, None] & (co < COUT)[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(patches, weights, acc, input_precision="ieee")
        else:
            acc = tl.dot(patches.to(tl.float16), weights.to(tl.float16), acc)
    acc += tl.load(b_ptr + co, mask=co < COUT, other=0.0).to(tl.float32)[None, :]
    acc = tl.where(acc >= 0, acc, acc * slope)
    out = y_ptr + (n * syn + ho * syh + wo * syw)[:, None] + co[None, :] * syc
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=pixel_ok[:, None] & (co[None, :] < COUT))


def rgb_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int,
             slope: float, tile: TileConfig = DEFAULT_TILE) -> torch.Tensor:
    """conv2d(x, weight, bias, stride, padding), then y if y >= 0 else slope * y, as one kernel.

    x: (N, C, H, W) in any layout, C small; weight (Cout, C, K, K) in any layout; returns
    (N, Cout, Ho, Wo) channels_last in x's dtype. fp16 multiplies in fp16 on tensor cores, fp32
    in true fp32.
    """
    n, cin, height, width = x.shape
    cout, _, k, _ = weight.shape
    out_height = (height + 2 * padding - k) // stride + 1
    out_width = (width + 2 * padding - k) // stride + 1
    y = torch.empty((n, cout, out_height, out_width), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    rows_total = n * out_height
    grid = (-(-rows_total // tile.rows), -(-out_width // tile.block_w))
    _rgb_conv_kernel[grid](
        x, weight, bias, y, rows_total, height, width, out_height, out_width,
        *x.stride(), *weight.stride(), *y.stride(), slope,
        CIN=cin, COUT=cout, COUT_P=max(MIN_DOT, 1 << (cout - 1).bit_length()), K=k, STRIDE=stride, PAD=padding,
        ROWS=tile.rows, BLOCK_W=tile.block_w, BLOCK_K=tile.block_taps, IEEE=x.dtype == torch.float32,
        num_warps=tile.num_warps,
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


def square_conv(conv: nn.Conv2d) -> bool:
    """Ungrouped, undilated, with a square kernel, one stride and one zero padding: the
    convolutions a kernel indexed by (K, STRIDE, PAD) computes."""
    return (conv.groups == 1 and conv.dilation == (1, 1) and len(set(conv.kernel_size)) == 1
            and len(set(conv.stride)) == 1 and len(set(conv.padding)) == 1 and conv.padding_mode == "zeros")


def _fits(conv: nn.Conv2d) -> bool:
    """An RGB `square_conv`."""
    return conv.in_channels == RGB_CHANNELS and square_conv(conv)


def activation_slope(act: nn.Module) -> float | None:
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
        slope = activation_slope(block.act) if isinstance(block, ConvBlock) else None
        if slope is not None and _fits(block.conv):
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent), attr, RGBConv(block.conv, block.bn, slope))
            count += 1
        elif isinstance(block, SEResNet) and _fits(block.conv1):
            block.conv1, block.bn1 = RGBConv(block.conv1, block.bn1, 0.0), nn.Identity()
            count += 1
    return count
