"""Does fp8 for the pose net's 1x1 convolutions pay on this GPU? Measured, not estimated.

    python3 benchmarks/fp8_probe.py [--iters 100] [--fast-accum]

The compiled fp16 engine (what `bench` runs) against the same engine whose stride-1 1x1
convolutions (BatchNorm folded in) run as `torch._scaled_mm` fp8 e4m3 GEMMs on the channels_last
activations, per-tensor scales calibrated on one batch; 3x3 convolutions, stride-2 projections, SE
and the head stay fp16 on cuDNN. Both are built by `CompiledEngine` (Inductor, frozen weights, own
CUDA graphs), so the quantising casts can fuse into the preceding kernels. Error is measured
against the eager fp32 engine on the same random crops (synthetic weights: the error is a
property of the arithmetic here, not a COCO accuracy). The FLOP-share estimate it checks is in
benchmarks/README.md (35 % of the FLOPs in 1x1 convolutions, at most ~18 % saved).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from alphapose_trt.bench import BenchOptions, Stopwatch, load_models, random_inputs
from alphapose_trt.cli import build_parser
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.eager import EagerEngine
from model_levers import kernel_breakdown

E4M3_MAX = 448.0


class Fp8Conv1x1(nn.Module):
    """A stride-1 1x1 conv + folded BatchNorm as one fp8 GEMM over the channels_last pixels."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, x_amax: float, fast_accum: bool) -> None:
        super().__init__()
        w, bias = fuse_conv_bn_weights(conv.weight.float(), None if conv.bias is None else conv.bias.float(),
                                       bn.running_mean.float(), bn.running_var.float(), bn.eps, bn.weight.float(),
                                       bn.bias.float())
        w = w.detach()[:, :, 0, 0]
        w_amax = w.abs().max().clamp(min=1e-12)
        self.register_buffer("w_t", (w * (E4M3_MAX / w_amax)).to(torch.float8_e4m3fn).t())  # (Cin, Cout), column-major
        self.register_buffer("bias", bias.detach().to(conv.weight.dtype))
        self.register_buffer("scale_x", torch.tensor(x_amax / E4M3_MAX, device=w.device))
        self.register_buffer("scale_w", (w_amax / E4M3_MAX).reshape(()))
        self.fast_accum = fast_accum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        a = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        a8 = (a.float() / self.scale_x).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(a8, self.w_t, scale_a=self.scale_x, scale_b=self.scale_w, bias=self.bias,
                               out_dtype=x.dtype, use_fast_accum=self.fast_accum)
        return out.view(n, h, w, -1).permute(0, 3, 1, 2)


def to_fp8(module: nn.Module, calib: torch.Tensor, fast_accum: bool) -> int:
    """Swap the stride-1 1x1 convs (and their BatchNorms) of an fp16 FastPose in place; returns how many."""
    amax: dict[nn.Module, float] = {}
    pairs = []
    for block in module.modules():
        if hasattr(block, "conv3"):
            pairs += [(block, "conv1", "bn1"), (block, "conv3", "bn3")]
            down = block.downsample
            if down is not None and down[0].stride == (1, 1):
                pairs.append((down, "0", "1"))
    hooks = [getattr(p, c).register_forward_hook(
        lambda m, inp, out: amax.__setitem__(m, max(amax.get(m, 0.0), inp[0].abs().max().item())))
        for p, c, _ in pairs]
    with torch.inference_mode():
        module(calib)
    for h in hooks:
        h.remove()
    for parent, c, b in pairs:
        conv = getattr(parent, c)
        setattr(parent, c, Fp8Conv1x1(conv, getattr(parent, b), amax[conv], fast_accum))
        setattr(parent, b, nn.Identity())
    return len(pairs)


def errors(got: torch.Tensor, want: torch.Tensor) -> str:
    """Heatmap error against fp32 and how often the peak (the keypoint) stays on the same cell."""
    got, want = got.float(), want.float()
    rel = ((got - want).abs().max() / want.abs().max()).item()
    same = (got.flatten(2).argmax(-1) == want.flatten(2).argmax(-1)).float().mean().item()
    return f"max rel err {rel:.2e}, same peak {same:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--fast-accum", action="store_true", help="fp8 accumulation in the GEMMs (faster, less exact)")
    args = ap.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    torch.backends.cudnn.benchmark = True
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pose", "--device", "cuda"]))
    models, _ = load_models(opts, ("pose",))
    watch = Stopwatch(torch.device("cuda"))
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    ref = EagerEngine(models["pose"], "cuda", "fp32", max_batch=batches[-1])
    for variant in ("fp16", "fp8-1x1"):
        start = time.perf_counter()
        engine = CompiledEngine(models["pose"], "cuda", "fp16", max_batch=batches[-1], mode="reduce-overhead",
                                batch_sizes=batches)
        if variant == "fp8-1x1":
            calib = random_inputs(engine, batches[-1], 1, 99)[0].contiguous(memory_format=torch.channels_last)
            print(f"{to_fp8(engine.module, calib, args.fast_accum)} 1x1 convs in fp8"
                  f"{' (fast accumulation)' if args.fast_accum else ''}", flush=True)
        engine.warmup()
        build = time.perf_counter() - start
        for batch in batches:
            inputs = random_inputs(engine, batch, 3, batch)
            for i in range(10):
                engine(inputs[i % 3])
            lat = statistics.median(watch.latencies_ms(engine, inputs, args.iters))
            total = watch.total_ms(engine, inputs, args.iters)
            err = errors(engine(inputs[0]), ref(inputs[0].float()))
            print(f"pose {variant:8s} b{batch:<3d} latency {lat:7.3f} ms  {batch * args.iters / total * 1e3:9.0f} "
                  f"crops/s  build {build:4.0f} s  vs eager fp32: {err}", flush=True)
            parts = kernel_breakdown(engine, inputs[0])
            print("    kernels/call {kernels:.0f}: ".format(**parts) + " ".join(
                f"{k} {v:.3f}" for k, v in sorted(parts.items()) if k != "kernels") + " ms", flush=True)
        engine.close()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
