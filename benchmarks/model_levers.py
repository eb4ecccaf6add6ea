"""Which lever moves the model engines on this GPU: latency, throughput and a kernel-time breakdown
(convolution / GEMM / Triton / other kernels per call, against the wall time per call) for
compiled-engine variants of both models, measured in one process.

    python3 benchmarks/model_levers.py [--models pose,detector] [--variants ...] [--large] [--profile]

Variants: `compiled` (what `bench` runs: reduce-overhead options, cudnn.benchmark on, each
model's RGB convolution with its BatchNorm and activation as one Triton kernel,
alphapose_trt/engines/rgb_conv.py, since session 12), `no-rgb` (that convolution on cuDNN +
Inductor's epilogue, as `compiled` until session 12), `no-benchmark` (cuDNN's heuristics),
`cudnn-all` (cudnn.benchmark times every algorithm cuDNN offers, `benchmark_limit` 0, instead of
its first 10), `1x1-as-mm` (Inductor's conv_1x1_as_mm), `gemm-autotune` (1x1 convs as
Triton-autotuned GEMMs, epilogue fusion allowed (none was fused in session 13), convolutions stay
on cuDNN), `no-pad` (odd channel counts left as they are, as before session 10: see
alphapose_trt/engines/padding.py);
`--cudnn-fused` adds the pose net rebuilt on cuDNN's fused conv+bias(+add)+ReLU calls.
Synthetic weights (speed does not depend on the values). Results: benchmarks/README.md.
cuDNN keeps the algorithm it picked per convolution shape for the whole process, so compare
cuDNN variants (`compiled`, `no-benchmark`, `cudnn-all`) in separate processes.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import time

import torch
import torch._inductor.config as inductor_config
from torch.nn.utils.fusion import fuse_conv_bn_weights

from alphapose_trt.bench import BenchOptions, Stopwatch, load_models, random_inputs
from alphapose_trt.engines.compiled import CompiledEngine
from probe_setup import unpadded  # benchmarks/, the script's folder

BATCHES = {"pose": (1, 64), "detector": (1, 8)}
VARIANTS = {
    "compiled": {},
    "no-benchmark": {},
    "cudnn-all": {},
    "1x1-as-mm": {"conv_1x1_as_mm": True},
    "gemm-autotune": {  # reduce-overhead's options plus GEMM autotuning only: mode max-autotune would also
        "conv_1x1_as_mm": True,  # autotune the convolutions, whose Triton templates lost to cuDNN (session 1)
        "max_autotune_gemm": True,
        "max_autotune_gemm_backends": "TRITON,ATEN",
        "max_autotune_conv_backends": "ATEN",
    },
    "no-pad": {},
    "no-rgb": {},
}


def category(name: str) -> str:
    """conv (cuDNN), gemm (cuBLAS, CUTLASS, Triton templates) or triton (Inductor's pointwise and
    reduction kernels: a convolution's bias and activation epilogue is named
    `triton_poi_fused_convolution_...`, so Triton is matched before "conv"; until session 11 those
    epilogues were counted as conv)."""
    low = name.lower()
    if low.startswith("triton_tem"):
        return "gemm"
    if low.startswith("triton"):
        return "triton"
    if "fprop" in low or "conv" in low or "implicit" in low or "cudnn" in low:
        return "conv"
    if "gemm" in low or "nvjet" in low or "cutlass" in low or "mm_" in low:
        return "gemm"
    return "other"


def kernel_breakdown(engine, x: torch.Tensor, calls: int = 10, top: int = 0) -> dict[str, float]:
    """Device time per call by kernel category (ms) and kernels per call; prints the `top`
    kernel names with the most time per call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            engine(x)
        torch.cuda.synchronize()
    sums: dict[str, float] = collections.defaultdict(float)
    names: dict[str, float] = collections.defaultdict(float)
    count = 0
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and "memcpy" not in event.name.lower():
            sums[category(event.name)] += event.device_time / 1e3 / calls
            names[event.name] += event.device_time / 1e3 / calls
            count += 1
    for name, ms in sorted(names.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {ms:7.4f} ms/call  {name[:110]}")
    sums["kernels"] = count / calls
    return dict(sums)


class FusedConv(torch.nn.Module):
    """Conv + folded BatchNorm (in the conv's dtype) as one cuDNN call: conv+bias(+residual)+ReLU fused by cuDNN."""

    def __init__(self, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d | None, relu: bool) -> None:
        super().__init__()
        w = conv.weight.detach().float()
        b = torch.zeros(w.shape[0], device=w.device) if conv.bias is None else conv.bias.detach().float()
        if bn is not None:
            w, b = fuse_conv_bn_weights(w, b, bn.running_mean.float(), bn.running_var.float(), bn.eps,
                                        bn.weight.detach().float(), bn.bias.detach().float())
        self.weight = w.detach().to(conv.weight.dtype).contiguous(memory_format=torch.channels_last)
        self.bias = b.detach().to(conv.weight.dtype)
        self.args = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        self.relu = relu

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is not None:
            return torch.cudnn_convolution_add_relu(x, self.weight, z, 1.0, self.bias, *self.args)
        if self.relu:
            return torch.cudnn_convolution_relu(x, self.weight, self.bias, *self.args)
        s, p, d, g = self.args
        return torch.nn.functional.conv2d(x, self.weight, self.bias, s, p, d, g)


class FusedBottleneck(torch.nn.Module):
    """`make(conv, bn, relu)` builds each fused convolution; its forward takes an optional residual
    that joins before the ReLU."""

    def __init__(self, block, make=FusedConv) -> None:
        super().__init__()
        self.c1 = make(block.conv1, block.bn1, True)
        self.c2 = make(block.conv2, block.bn2, True)
        self.c3 = make(block.conv3, block.bn3, False)
        self.se = block.se
        self.down = None if block.downsample is None else make(block.downsample[0], block.downsample[1], False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c2(self.c1(x))
        residual = x if self.down is None else self.down(x)
        if self.se is None:
            return self.c3(out, residual)
        return torch.relu(self.se(self.c3(out)) + residual)


class FusedFastPose(torch.nn.Module):
    """FastPose with every conv+BN(+add)+ReLU as one cuDNN fused call (fp16, channels_last)."""

    def __init__(self, model, make=FusedConv) -> None:
        super().__init__()
        pre = model.preact
        self.stem = make(pre.conv1, pre.bn1, True)
        self.maxpool = pre.maxpool
        self.blocks = torch.nn.Sequential(*[FusedBottleneck(b, make) for n in ("layer1", "layer2", "layer3", "layer4")
                                            for b in getattr(pre, n)])
        self.shuffle = model.suffle1
        self.duc1 = make(model.duc1.conv, model.duc1.bn, True)
        self.duc2 = make(model.duc2.conv, model.duc2.bn, True)
        self.ps = model.duc1.pixel_shuffle
        self.out = make(model.conv_out, None, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.maxpool(self.stem(x.contiguous(memory_format=torch.channels_last))))
        x = self.ps(self.duc1(self.shuffle(x).contiguous(memory_format=torch.channels_last)))
        x = self.ps(self.duc2(x.contiguous(memory_format=torch.channels_last)))
        return self.out(x.contiguous(memory_format=torch.channels_last))


def bench_cudnn_fused(models, watch, iters: int) -> None:
    """Pose only: eager fused module + CUDA graphs, checked against the eager fp16 module."""
    from alphapose_trt.engines.eager import CudaGraphCache, EagerEngine

    ref = EagerEngine(models["pose"], "cuda", "fp16", max_batch=64)
    module = FusedFastPose(ref.module.eval())
    for flag in (True, False):
        torch.backends.cudnn.benchmark = flag
        with torch.inference_mode():
            graphs = CudaGraphCache(module)
            for batch in BATCHES["pose"]:
                inputs = random_inputs(ref, batch, 3, batch)
                want, got = ref(inputs[0]).float(), graphs(inputs[0]).float()
                err = ((want - got).abs().max() / want.abs().max()).item()
                for i in range(10):
                    graphs(inputs[i % 3])
                lat = statistics.median(watch.latencies_ms(graphs, inputs, iters))
                total = watch.total_ms(graphs, inputs, iters)
                print(f"pose     cudnn-fused bm={int(flag)} b{batch:<3d} latency {lat:7.3f} ms  "
                      f"{batch * iters / total * 1e3:9.0f} items/s  max rel err vs eager fp16 {err:.1e}", flush=True)


@contextlib.contextmanager
def patched(options: dict):
    old = {k: getattr(inductor_config, k) for k in options}
    for k, v in options.items():
        setattr(inductor_config, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(inductor_config, k, v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="pose,detector")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--large", action="store_true", help="only each model's large batch (64 and 8): half the builds")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=0, help="with --profile: list this many kernels by time")
    ap.add_argument("--cudnn-fused", action="store_true", help="also the pose net as cuDNN fused conv calls")
    args = ap.parse_args()
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:  # e.g. `fuse-rgb`, now `compiled` (session 13)
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    device = torch.device("cuda")
    from alphapose_trt.cli import build_parser

    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pose", "--device", "cuda"]))
    models, _ = load_models(opts, ("detector", "pose"))
    watch = Stopwatch(device)
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    if args.cudnn_fused:
        bench_cudnn_fused(models, watch, args.iters)
    for kind in [m for m in args.models.split(",") if m]:
        batches = BATCHES[kind][-1:] if args.large else BATCHES[kind]
        for variant in args.variants.split(","):
            torch.backends.cudnn.benchmark = variant != "no-benchmark"
            torch.backends.cudnn.benchmark_limit = 0 if variant == "cudnn-all" else 10
            start = time.perf_counter()
            with patched(VARIANTS[variant]), unpadded(variant == "no-pad"):
                engine = CompiledEngine(models[kind], device, "fp16", max_batch=batches[-1],
                                        mode="reduce-overhead", batch_sizes=batches,
                                        fuse_rgb=variant != "no-rgb")
                engine.warmup()
            build = time.perf_counter() - start
            for batch in batches:
                inputs = random_inputs(engine, batch, 3, batch)
                for i in range(10):
                    engine(inputs[i % 3])
                lat = statistics.median(watch.latencies_ms(engine, inputs, args.iters))
                total = watch.total_ms(engine, inputs, args.iters)
                line = (f"{kind:8s} {variant:14s} b{batch:<3d} latency {lat:7.3f} ms  "
                        f"{batch * args.iters / total * 1e3:9.0f} items/s  build {build:5.0f} s")
                if args.profile:
                    parts = kernel_breakdown(engine, inputs[0], top=args.top)
                    line += "  | kernels/call {kernels:.0f}: ".format(**parts) + " ".join(
                        f"{k} {v:.3f}" for k, v in sorted(parts.items()) if k != "kernels"
                    ) + f" (sum {sum(v for k, v in parts.items() if k != 'kernels'):.3f} ms)"
                print(line, flush=True)
            engine.close()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
