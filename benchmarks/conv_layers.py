"""Every convolution of both models timed alone on this GPU against its roofline, and whether
padding an awkward channel count (3 input channels, 17 or 255 output channels) speeds it up.

    python3 benchmarks/conv_layers.py [--models pose,detector] [--reps 20]

Why: the engines run at their kernels' pace and the kernels are mostly cuDNN's fp16 convolutions
(benchmarks/README.md), so the question left is which convolutions sit far from what the GPU
allows. Each distinct convolution (shapes, stride, padding) runs as the compiled engines call it:
fp16, channels_last, with a bias (BatchNorm folded), cudnn.benchmark on; `reps` calls are captured
in one CUDA graph and replayed, so the time per call is device time without launch gaps. The
bound is max(FLOPs / dense fp16 peak, bytes / HBM bandwidth), bytes = input + weights + output
read or written once. Padded variants time the padding copy with the convolution (`pad+conv`)
when the input is padded, and only the convolution when extra output channels are sliced off
(a view). Synthetic weights (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import collections
import statistics

import torch
import torch.nn.functional as F

from alphapose_trt.bench import BenchOptions, load_models, peak_tflops
from alphapose_trt.cli import build_parser

BATCHES = {"pose": (1, 64), "detector": (1, 8)}
HBM_TBPS = 3.35  # H100 SXM HBM3


def conv_calls(module: torch.nn.Module, x: torch.Tensor) -> collections.Counter:
    """(input shape, weight shape, stride, padding, dilation, groups) of every Conv2d call -> count."""
    seen: collections.Counter = collections.Counter()

    def hook(conv: torch.nn.Conv2d, args, _out) -> None:
        seen[(tuple(args[0].shape), tuple(conv.weight.shape), conv.stride, conv.padding, conv.dilation, conv.groups)] += 1

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def graph_time_ms(fn, reps: int) -> float:
    """Device time per call of `fn`: `reps` calls in one CUDA graph, median of 5 replays."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def conv_runner(in_shape, w_shape, stride, padding, dilation, groups, pad_in: int = 0, pad_out: int = 0):
    """A closure running the convolution (optionally channel-padded) on fixed device tensors."""
    dev = torch.device("cuda")
    x = torch.randn(in_shape, device=dev, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    cout, cin_g, kh, kw = w_shape
    w = torch.randn(cout + pad_out, cin_g + pad_in, kh, kw, device=dev, dtype=torch.float16)
    w = (w * 0.05).contiguous(memory_format=torch.channels_last)
    b = torch.zeros(cout + pad_out, device=dev, dtype=torch.float16)

    def run() -> torch.Tensor:
        inp = F.pad(x, (0, 0, 0, 0, 0, pad_in)).contiguous(memory_format=torch.channels_last) if pad_in else x
        return F.conv2d(inp, w, b, stride, padding, dilation, groups)

    return run


def cost(in_shape, w_shape, out_shape) -> tuple[float, float]:
    """(FLOPs, bytes) of one call."""
    n, cout, ho, wo = out_shape
    _, cin_g, kh, kw = w_shape
    flops = 2.0 * n * cout * ho * wo * cin_g * kh * kw
    elems = torch.Size(in_shape).numel() + torch.Size(w_shape).numel() + torch.Size(out_shape).numel()
    return flops, 2.0 * elems


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="pose,detector")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    peak = peak_tflops(torch.cuda.get_device_name()) or 989.4
    print(torch.__version__, torch.cuda.get_device_name(), f"peak {peak} TFLOP/s, HBM {HBM_TBPS} TB/s")
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
    kinds = args.models.split(",")
    models, _ = load_models(opts, kinds)
    for kind in kinds:
        loaded = models[kind]
        module = loaded.module.to("cuda", torch.float16).to(memory_format=torch.channels_last).eval()
        h, w = loaded.input_hw
        for batch in BATCHES[kind]:
            x = torch.rand(batch, 3, h, w, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
            calls = conv_calls(module, x)
            rows = []
            for (in_shape, w_shape, stride, padding, dilation, groups), count in calls.items():
                run = conv_runner(in_shape, w_shape, stride, padding, dilation, groups)
                out_shape = tuple(run().shape)
                ms = graph_time_ms(run, args.reps)
                flops, nbytes = cost(in_shape, w_shape, out_shape)
                bound = max(flops / (peak * 1e9), nbytes / (HBM_TBPS * 1e9))
                variants = {}
                cin, cout = w_shape[1], w_shape[0]
                if cin % 8:
                    for to in (4, 8):
                        if to > cin:
                            variants[f"pad+conv in->{to}"] = graph_time_ms(
                                conv_runner(in_shape, w_shape, stride, padding, dilation, groups, pad_in=to - cin), args.reps)
                            variants[f"conv in->{to}"] = graph_time_ms(
                                conv_runner((in_shape[0], to, *in_shape[2:]), (cout, to, *w_shape[2:]), stride, padding,
                                            dilation, groups), args.reps)
                if cout % 8:
                    for to in (-(-cout // 8) * 8, -(-cout // 64) * 64):
                        variants.setdefault(f"conv out->{to}", graph_time_ms(
                            conv_runner(in_shape, w_shape, stride, padding, dilation, groups, pad_out=to - cout), args.reps))
                rows.append((ms * count, ms, count, in_shape, w_shape, stride, flops, bound, variants))
            rows.sort(key=lambda r: -r[0])
            total = sum(r[0] for r in rows)
            slack = sum((r[1] - r[7]) * r[2] for r in rows)
            print(f"\n{kind} b{batch}: {sum(calls.values())} convolutions, {len(calls)} distinct, "
                  f"{total:.3f} ms alone, bound {total - slack:.3f} ms")
            print(f"{'ms x n':>12} {'share':>6} {'TFLOP/s':>8} {'of bound':>8}  input -> weight, stride")
            for all_ms, ms, count, in_shape, w_shape, stride, flops, bound, variants in rows:
                print(f"{ms:7.4f} x{count:<3} {100 * all_ms / total:5.1f}% {flops / ms / 1e9:8.1f} {bound / ms:8.2f}  "
                      f"{in_shape} -> {w_shape}, s{stride[0]}")
                for name, vms in variants.items():
                    print(f"{'':14}{name}: {vms:.4f} ms ({vms - ms:+.4f})")


if __name__ == "__main__":
    main()
