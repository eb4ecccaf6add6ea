"""A convolution with its bias, activation and residual join in one Triton kernel (implicit GEMM,
channels_last fp16), for `conv_fusion_probe.py --backend triton` (per layer) and
`frontend_engines.py --backend triton` (whole engines).

Why: the compiled engines run each convolution as a cuDNN kernel, then an Inductor kernel that
reads and writes the whole output again for the bias and activation (~0.8 ms of the detector's
3.5 ms at batch 8, ~0.9 ms of the pose net's 3.1 ms at batch 64; session 11). cuDNN's fused
graphs (the frontend) lost more in the convolution than they saved (session 12). The RGB
convolutions' Triton kernel beat cuDNN + epilogue 1.7-2.8x once its tile was tuned (session 12);
this asks the same of every other convolution: each output tile is a GEMM of BLOCK_M output
pixels x BLOCK_N output channels over (kernel tap, input channel), the input read straight from
the channels_last activation (no im2col), and the epilogue applied before the one write.
Whatever shapes win here are candidates for an engine option like `fuse_rgb`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from alphapose_trt.engines.cudnn_fusion import epilogue
from alphapose_trt.engines.rgb_conv import square_conv
from conv_layers import graph_time_ms  # benchmarks/, the script's folder
from model_levers import FusedConv


@dataclass(frozen=True)
class ConvTile:
    block_m: int  # output pixels per program
    block_n: int  # output channels per program
    block_k: int  # input channels per step of the product
    num_warps: int
    num_stages: int


# Hopper-sized tiles (wgmma wants 64-row multiples per warpgroup), from square to wide
TILES = (
    ConvTile(128, 128, 64, 8, 3), ConvTile(128, 64, 64, 4, 4), ConvTile(64, 128, 64, 4, 4),
    ConvTile(128, 256, 64, 8, 3), ConvTile(256, 128, 64, 8, 3), ConvTile(64, 64, 64, 4, 4),
    ConvTile(128, 128, 32, 4, 4), ConvTile(64, 256, 32, 8, 4),
)


def tiles_for(cout: int) -> list[ConvTile]:
    """TILES with no tile wider than the output channels it covers."""
    widest = max(16, triton.next_power_of_2(cout))
    return list(dict.fromkeys(ConvTile(t.block_m, min(t.block_n, widest), t.block_k, t.num_warps, t.num_stages)
                              for t in TILES))


def fastest_tile(cout: int, run: Callable[[ConvTile], None], reps: int) -> tuple[ConvTile, float]:
    """The tile of `tiles_for(cout)` with which `run(tile)` takes the least device time (a CUDA
    graph of `reps` calls), and that time in ms."""
    times = {tile: graph_time_ms(lambda: run(tile), reps) for tile in tiles_for(cout)}
    best = min(times, key=times.get)
    return best, times[best]


# sizes only bound the masks: one build serves every image size (channel counts and strides stay
# specialised, which keeps the loads aligned and vectorised)
@triton.jit(do_not_specialize=["pixels", "height", "width", "out_height", "out_width"])
def _conv_kernel(
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
    pixels, height, width, out_height, out_width, cin, cout,
    sxn, sxh, sxw, syn, syh, syw, srn, srh, srw,
    slope,
    K: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, RESIDUAL: tl.constexpr, ADD_AFTER_ACT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
):
    """y = act(conv(x) + b) [+ r], or act(conv(x) + b + r) (ADD_AFTER_ACT false); act(v) = v if
    v >= 0 else slope * v. x, y, r channels_last (channel stride 1); w laid out (K, K, cin, cout).
    EVEN_K / EVEN_N (cin, cout multiples of the block) drop the channel masks, whose variation
    along the contiguous channels would stop the loads and stores from being vectorised."""
    # output-channel tiles vary fastest: the programs sharing one input tile run together, so it is
    # read from HBM once (the weights, at most ~9 MB, stay in L2)
    n_tiles = tl.cdiv(cout, BLOCK_N)
    m = tl.program_id(0) // n_tiles * BLOCK_M + tl.arange(0, BLOCK_M)
    co = tl.program_id(0) % n_tiles * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < pixels
    co_ok = (co < cout) | EVEN_N
    wo = m % out_width
    ho = (m // out_width) % out_height
    n = (m // (out_width * out_height)).to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # one loop over (tap, channel block), so the software pipeline (num_stages) spans the whole
    # reduction, not one tap's few channel blocks (a single one where cin <= BLOCK_K)
    steps = tl.cdiv(cin, BLOCK_K)
    for i in range(0, K * K * steps):
        tap = i // steps
        c = (i - tap * steps) * BLOCK_K + tl.arange(0, BLOCK_K)
        hi = ho * STRIDE - PAD + tap // K
        wi = wo * STRIDE - PAD + tap % K
        ok = m_ok & (hi >= 0) & (hi < height) & (wi >= 0) & (wi < width)
        c_ok = (c < cin) | EVEN_K
        a = tl.load(x_ptr + (n * sxn + hi * sxh + wi * sxw)[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :],
                    other=0.0)
        b = tl.load(w_ptr + (tap * cin + c)[:, None] * cout + co[None, :], mask=c_ok[:, None] & co_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc)
    acc += tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    out_ok = m_ok[:, None] & co_ok[None, :]
    if RESIDUAL:
        res = tl.load(r_ptr + (n * srn + ho * srh + wo * srw)[:, None] + co[None, :], mask=out_ok, other=0.0).to(tl.float32)
        if not ADD_AFTER_ACT:
            acc += res
    acc = tl.where(acc >= 0, acc, acc * slope)
    if RESIDUAL:
        if ADD_AFTER_ACT:
            acc += res
    tl.store(y_ptr + (n * syn + ho * syh + wo * syw)[:, None] + co[None, :], acc.to(y_ptr.dtype.element_ty), mask=out_ok)


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """(cout, cin, K, K) -> (K, K, cin, cout) contiguous: the kernel's B operand, rows contiguous in cout."""
    return weight.permute(2, 3, 1, 0).contiguous()


def conv_act(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor, out: torch.Tensor, stride: int, padding: int,
             slope: float, tile: ConvTile, residual: torch.Tensor | None = None, add_after_act: bool = True) -> None:
    """Write act(conv2d(x, w) + bias) [+ residual] into `out` (channels_last, preallocated)."""
    n, cin, height, width = x.shape
    k, cout = packed.shape[0], packed.shape[3]
    _, _, out_height, out_width = out.shape
    pixels = n * out_height * out_width
    r = x if residual is None else residual  # any readable tensor where there is none: never read then
    grid = (triton.cdiv(pixels, tile.block_m) * triton.cdiv(cout, tile.block_n),)
    _conv_kernel[grid](
        x, packed, bias, r, out, pixels, height, width, out_height, out_width, cin, cout,
        x.stride(0), x.stride(2), x.stride(3), out.stride(0), out.stride(2), out.stride(3),
        r.stride(0), r.stride(2), r.stride(3), slope,
        K=k, STRIDE=stride, PAD=padding, RESIDUAL=residual is not None, ADD_AFTER_ACT=add_after_act,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k,
        EVEN_K=cin % tile.block_k == 0, EVEN_N=cout % tile.block_n == 0,
        num_warps=tile.num_warps, num_stages=tile.num_stages,
    )


class TritonFusedConv:
    """conv -> bias -> activation [-> residual] on fixed tensors with the fastest of `TILES`
    (the same interface as conv_fusion_probe.FusedConv). slope None: ReLU with the residual
    joining before it (pose bottleneck); a number: leaky ReLU, residual after (darknet shortcut)."""

    def __init__(self, x, w, b, y, stride, padding, slope: float | None, residual: torch.Tensor | None = None) -> None:
        for t, name in ((x, "input"), (y, "output")):
            if t.stride(1) != 1:
                raise ValueError(f"{name} must be channels_last")
        self.x, self.w, self.b, self.y, self.r = x, pack_weight(w), b.reshape(-1).contiguous(), y, residual
        self.stride, self.padding = stride[0], padding[0]
        self.slope = 0.0 if slope is None else slope
        self.add_after_act = slope is not None
        tiles = tiles_for(w.shape[0])
        self.tile, self.plans = tiles[0], len(tiles)

    def __call__(self) -> None:
        self._run(self.tile)

    def _run(self, tile: ConvTile) -> None:
        conv_act(self.x, self.w, self.b, self.y, self.stride, self.padding, self.slope, tile, self.r, self.add_after_act)

    def fastest(self, reps: int) -> tuple[float, str]:
        """Time every tile in a CUDA graph; keep the fastest. Returns (ms, the tile)."""
        self.tile, ms = fastest_tile(self.w.shape[3], self._run, reps)
        t = self.tile
        return ms, f"tile {t.block_m}x{t.block_n}x{t.block_k} w{t.num_warps} s{t.num_stages}"


# cuDNN + this one kernel is what the compiled engine runs for a convolution TritonConv leaves alone
# (and the split path conv_fusion_probe.py times); `epilogue` is what both conv_act kernels apply (this
# file's Triton one and cudnn_fusion's), as PyTorch ops
compiled_epilogue = torch.compile(epilogue, dynamic=True)


class TritonConv(FusedConv):
    """Conv + folded BatchNorm + activation [+ residual] as `conv_act`, or as the compiled engine's
    cuDNN convolution + one epilogue kernel where that is faster, for whole engines
    (`frontend_engines.py --backend triton`), callable inside torch.compile.

    slope: the activation without a residual (0 ReLU, 1 linear, else leaky). join: where a
    residual given to forward joins: "before-relu" (pose bottleneck: relu(conv + b + z)) or
    "after-act" (darknet shortcut: act(conv + b) + z). `tune` (eager, before compiling) times
    each input shape's tiles and the cuDNN route and keeps the fastest (None: cuDNN); an untuned
    shape takes the first of `tiles_for` its channels.
    """

    def __init__(self, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d | None, slope: float, join: str) -> None:
        if not square_conv(conv):
            raise ValueError(f"no Triton kernel here for {conv}")
        super().__init__(conv, bn, slope == 0.0)  # BatchNorm folded
        self.register_buffer("packed", pack_weight(self.weight))
        self.stride, self.padding, self.slope, self.join = conv.stride[0], conv.padding[0], slope, join
        self.tiles: dict[tuple, ConvTile | None] = {}
        self.untuned = tiles_for(conv.out_channels)[0]
        self.tuning = False

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        slope, after = self.slope, True
        if z is not None:
            z = z.contiguous(memory_format=torch.channels_last)
            if self.join == "before-relu":
                slope, after = 0.0, False
        key = (tuple(x.shape), z is not None)

        def cudnn() -> torch.Tensor:
            return F.conv2d(x, self.weight, None, self.stride, self.padding)

        if self.tuning and key not in self.tiles:
            self.tiles[key] = self._fastest(x, z, cudnn(), slope, after)
        tile = self.tiles.get(key, self.untuned)
        if tile is None:
            return epilogue(cudnn(), self.bias, z, slope, not after)
        out = torch.empty((x.shape[0], self.packed.shape[3], *self._out_hw(x)), device=x.device, dtype=x.dtype,
                          memory_format=torch.channels_last)
        conv_act(x, self.packed, self.bias, out, self.stride, self.padding, slope, tile, z, after)
        return out

    def _out_hw(self, x: torch.Tensor) -> tuple[int, int]:
        k = self.packed.shape[0]
        return tuple((size + 2 * self.padding - k) // self.stride + 1 for size in x.shape[2:])

    def _fastest(self, x, z, y, slope: float, after: bool) -> ConvTile | None:
        """The fastest tile for this shape, or None where cuDNN + the compiled epilogue is faster."""
        out = torch.empty_like(y)
        tile, ms = fastest_tile(self.packed.shape[3], lambda t: conv_act(
            x, self.packed, self.bias, out, self.stride, self.padding, slope, t, z, after), 10)
        split_ms = (graph_time_ms(lambda: F.conv2d(x, self.weight, None, self.stride, self.padding), 10)
                    + graph_time_ms(lambda: compiled_epilogue(y, self.bias, z, slope, not after), 10))
        return tile if ms < split_ms else None


def tune(module: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Run `module` once on `x` eagerly, letting each TritonConv pick its fastest tile, or cuDNN,
    for its shape. Returns how many shapes went each way."""
    convs = [m for m in module.modules() if isinstance(m, TritonConv)]
    for m in convs:
        m.tuning = True
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for m in convs:
            m.tuning = False
    key = (x.shape[0],)
    chosen = [tile for m in convs for k, tile in m.tiles.items() if k[0][:1] == key]
    return {"triton": sum(t is not None for t in chosen), "cudnn": sum(t is None for t in chosen)}
