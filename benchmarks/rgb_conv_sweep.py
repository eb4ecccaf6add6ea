"""The RGB-convolution kernel (engines/rgb_conv.py) over tile shapes and input layouts, against
what the compiled engines run for that layer: cuDNN's convolution on the 4-channel padded input
plus Inductor's bias-and-activation kernel.

    python3 benchmarks/rgb_conv_sweep.py [--reps 20]

Why: in session 12's first measurement the kernel with its first tile (1 row x 32 pixels, 4
warps) took 0.265 ms at detector batch 8, no faster than cuDNN + epilogue (0.144 + 0.125 ms),
while its one output write bounds it near 0.06 ms. Each case is the layer the engine runs (fp16,
BatchNorm folded into a bias), input NCHW (`nchw`, as the pipeline hands it over) or
channels_last (`cl`); every kernel output is checked against fp32 F.conv2d + bias + activation.
Times are device time per call in a CUDA graph (`conv_layers.graph_time_ms`).
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F

from alphapose_trt.engines.rgb_conv import TileConfig, rgb_conv
from conv_layers import graph_time_ms  # benchmarks/, the script's folder

# name: (batch, height, width, out channels, kernel, stride, padding, slope)
CASES = {
    "detector b1": (1, 608, 608, 32, 3, 1, 1, 0.1),
    "detector b8": (8, 608, 608, 32, 3, 1, 1, 0.1),
    "pose b1": (1, 256, 192, 64, 7, 2, 3, 0.0),
    "pose b64": (64, 256, 192, 64, 7, 2, 3, 0.0),
}
TILES = [TileConfig(rows=r, block_w=w, num_warps=nw) for r, w, nw in itertools.product((1, 2, 4), (32, 64), (4, 8))]
TILES += [TileConfig(rows=2, block_w=64, block_taps=bk, num_warps=nw) for bk, nw in itertools.product((16, 64), (4, 8))]
TILES += [TileConfig(rows=r, block_w=w) for r, w in ((4, 16), (8, 16), (8, 32), (16, 16))]  # beyond session 12's best (4 x 32)


def activate(y: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.where(y >= 0, y, y * slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    for name, (n, h, w, cout, k, stride, pad, slope) in CASES.items():
        x = torch.rand(n, 3, h, w, device=dev, generator=gen, dtype=torch.float16)
        weight = (torch.randn(cout, 3, k, k, device=dev, generator=gen) * 0.2).half()
        bias = torch.randn(cout, device=dev, generator=gen).half()
        ref = activate(F.conv2d(x.float(), weight.float(), bias.float(), stride, pad), slope)

        x4 = F.pad(x, (0, 0, 0, 0, 0, 1)).contiguous(memory_format=torch.channels_last)
        w4 = F.pad(weight, (0, 0, 0, 0, 0, 1)).contiguous(memory_format=torch.channels_last)
        engine_layer = torch.compile(lambda: activate(F.conv2d(x4, w4, None, stride, pad) + bias[:, None, None], slope))
        base = graph_time_ms(engine_layer, args.reps)
        print(f"{name}: cuDNN + epilogue (the compiled engine's layer) {base:.4f} ms", flush=True)
        rows = []
        for layout, tile in itertools.product(("nchw", "cl"), TILES):
            xi = x if layout == "nchw" else x.contiguous(memory_format=torch.channels_last)
            y = rgb_conv(xi, weight, bias, stride, pad, slope, tile)
            err = float((y.float() - ref).abs().max() / ref.abs().max())
            ms = graph_time_ms(lambda: rgb_conv(xi, weight, bias, stride, pad, slope, tile), args.reps)
            rows.append((ms, layout, tile, err))
        for ms, layout, tile, err in sorted(rows, key=lambda r: r[0]):
            print(f"  {ms:.4f} ms  {base / ms:4.2f}x  {layout:4s} rows {tile.rows} block_w {tile.block_w:3d} "
                  f"taps {tile.block_taps:2d} warps {tile.num_warps}  err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
