"""Both models with every convolution's BatchNorm, bias, activation (and the pose net's residual
join) fused into one cuDNN frontend graph per convolution, or one Triton kernel per convolution,
against the compiled engines.

    python3 benchmarks/frontend_engines.py [--backend frontend|frontend-compiled|triton] [--models detector,pose]
        [--plans 4] [--no-join] [--rounds 2] [--profile TOP]
    (frontend: needs `nvidia-cudnn-frontend` on PYTHONPATH, `bash benchmarks/h100.sh frontend OUT`;
    frontend-compiled: the same, `bash benchmarks/h100.sh frontend-compiled OUT`;
    triton: `bash benchmarks/h100.sh triton-engines OUT`)

Why: `conv_fusion_probe.py` times the fusion layer by layer; this times it where it counts, in
whole models. Each model runs eagerly in one CUDA graph per batch (`CudaGraphCache`):
- pose: the session-3 `FusedFastPose` of `model_levers.py`, built on `FrontendConv`: stem,
  bottlenecks (conv + bias + ReLU, the third conv with its residual before the ReLU where no SE
  sits between them), DUC layers and the output convolution;
- detector: every Darknet block (conv, BatchNorm, leaky ReLU or linear) as one `FrontendConv`;
  shortcuts, routes, pools and the YOLO heads stay PyTorch ops.
`--backend frontend-compiled` keeps the compiled engine and swaps the same convolutions as
`--backend triton` (below) for the frontend graphs, each behind one custom op that Inductor
compiles around (`engines/cudnn_fusion.conv_act`, the engines' `fuse_convs`), so the rest of the
model is fused as in the plain engine (session 12's eager frontend models were not; the per-layer
probe then found the fused graphs as fast as the bare convolutions, session 14).
`--backend triton` keeps the compiled engine (Inductor, CUDA graphs, the RGB kernel) and swaps,
before it compiles, every other convolution but the padded heads for `triton_conv.TritonConv`
(the same pose modules; each Darknet block, with the shortcut that follows it joined inside its
kernel by `JoinedShortcut`), each shape's tile, or cuDNN + the compiled epilogue where that is
faster, picked by timing once, eagerly.
Each row gives its latency and throughput, the compiled engine's alternately in the same
process, and its largest error against eager fp16 (relative to the output's range).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from alphapose_trt.bench import BenchOptions, Stopwatch, load_models, random_inputs
from alphapose_trt.cli import build_parser
from alphapose_trt.engines import cudnn_fusion
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.eager import CudaGraphCache, EagerEngine
from alphapose_trt.engines.cudnn_fusion import JoinedShortcut
from alphapose_trt.engines.padding import RGB_CHANNELS
from alphapose_trt.engines.rgb_conv import activation_slope
from alphapose_trt.models.darknet import ConvBlock, Shortcut
from conv_layers import BATCHES  # benchmarks/, the script's folder
from model_levers import FusedBottleneck, FusedFastPose, kernel_breakdown
from triton_conv import TritonConv, tune


class FrontendConv(cudnn_fusion.ConvAct):
    """Session 12's eager frontend convolution, now run by `cudnn_fusion.conv_act` (the engines'
    op): conv -> bias (BatchNorm folded) -> activation, or, given a residual (the third convolution
    of `model_levers.FusedBottleneck`), conv -> bias -> + residual -> ReLU.

    act: "relu", a leaky ReLU slope, or None (linear). A shape no fused plan builds for runs as
    PyTorch ops, with conv_act's warning (session 12's run listed such shapes; it had none).
    """

    def __init__(self, conv: torch.nn.Conv2d, bn, act) -> None:
        slope = cudnn_fusion.RELU if act == "relu" else cudnn_fusion.LINEAR if act is None else act
        super().__init__(conv, bn, slope, join="before")

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            return super().forward(x)
        x, z = (t.contiguous(memory_format=torch.channels_last) for t in (x, z))
        return cudnn_fusion.conv_act(x, self.weight, self.bias, z, cudnn_fusion.RELU, True, self.stride, self.padding)


def frontend_compiled_engine(model, batches, join_shortcuts: bool = True) -> CompiledEngine:
    """The compiled engine with its convolutions fused by the cuDNN frontend (`fuse_convs`, the
    library's `engines/cudnn_fusion.py` since session 14; its first run used a copy of it here, at
    7faec85); without `join_shortcuts`, the darknet shortcuts stay Inductor's."""
    engine = CompiledEngine(model, "cuda", "fp16", max_batch=batches[-1], mode="reduce-overhead", batch_sizes=batches,
                            fuse_convs=join_shortcuts)
    if not join_shortcuts:  # the prepared module, before its first call compiles it
        cudnn_fusion.fuse_convs(engine.module, join_shortcuts=False)
    modules = list(engine.module.modules())
    print(f"{model.kind}: {sum(isinstance(m, cudnn_fusion.ConvAct) for m in modules)} convolutions as frontend "
          f"graphs, {sum(isinstance(m, cudnn_fusion.JoinedShortcut) for m in modules)} shortcuts joined", flush=True)
    engine.warmup()
    return engine


def frontend_detector(module: torch.nn.Module, make) -> torch.nn.Module:
    """A copy of the detector with each Darknet block (leaky or linear) as `make(conv, bn, act)`."""
    module = copy.deepcopy(module)
    for name, block in list(module.named_modules()):
        if isinstance(block, ConvBlock) and isinstance(block.act, (torch.nn.LeakyReLU, torch.nn.Identity)):
            act = block.act.negative_slope if isinstance(block.act, torch.nn.LeakyReLU) else None
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent), attr, make(block.conv, block.bn, act))
    return module


def triton_pose(module: torch.nn.Module) -> None:
    """In place: FastPose's bottlenecks and DUC convolutions as TritonConv (the stem is the RGB
    kernel already, the padded output convolution stays on cuDNN)."""
    def make(conv, bn, relu):
        return TritonConv(conv, bn, 0.0 if relu else 1.0, "before-relu")

    for name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(module.preact, name)
        for i, block in enumerate(layer):
            layer[i] = FusedBottleneck(block, make)
    for duc in (module.duc1, module.duc2):
        duc.conv, duc.bn, duc.relu = make(duc.conv, duc.bn, True), torch.nn.Identity(), torch.nn.Identity()


def triton_detector(module: torch.nn.Module) -> None:
    """In place: every Darknet block but the padded heads (and the RGB kernel) as TritonConv, with
    a linear shortcut right after it joined inside its kernel (`cudnn_fusion.JoinedShortcut`)
    unless the block's own output is read again."""
    modules = module.module_list
    for i, block in enumerate(modules):
        if isinstance(block, ConvBlock) and isinstance(block.conv, torch.nn.Conv2d) and block.conv.in_channels != RGB_CHANNELS:
            slope = activation_slope(block.act)
            if slope is not None:
                modules[i] = TritonConv(block.conv, block.bn, slope, "after-act")
    for i in range(len(modules) - 1):
        conv, shortcut = modules[i], modules[i + 1]
        if (isinstance(conv, TritonConv) and isinstance(shortcut, Shortcut)
                and isinstance(shortcut.act, torch.nn.Identity) and i not in module._kept):
            modules[i], modules[i + 1] = torch.nn.Identity(), JoinedShortcut(conv, shortcut)


def triton_engine(model, batches) -> CompiledEngine:
    """The compiled engine with its convolutions swapped for TritonConv before it compiles, routes tuned per batch."""
    engine = CompiledEngine(model, "cuda", "fp16", max_batch=batches[-1], mode="reduce-overhead", batch_sizes=batches,
                            fuse_convs=False)
    (triton_pose if model.kind == "pose" else triton_detector)(engine.module)
    h, w = model.input_hw
    for batch in batches:
        routes = tune(engine.module, torch.rand(batch, 3, h, w, device="cuda", dtype=torch.float16))
        print(f"{model.kind} b{batch}: shapes on the Triton kernel {routes['triton']}, on cuDNN + epilogue "
              f"{routes['cudnn']}", flush=True)
    engine.warmup()
    return engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("frontend", "frontend-compiled", "triton"), default="frontend")
    ap.add_argument("--models", default="detector,pose")
    ap.add_argument("--plans", type=int, default=4)
    ap.add_argument("--no-join", action="store_true",
                    help="frontend-compiled: leave the darknet shortcuts to Inductor instead of the kernels before them")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--profile", type=int, default=0, metavar="TOP",
                    help="after the timings, each engine's kernel time by category and its TOP longest kernels")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    print(torch.__version__, torch.cuda.get_device_name(), "cuDNN", torch.backends.cudnn.version(), flush=True)
    cudnn_fusion.PLANS = args.plans
    if args.backend != "triton":
        if cudnn_fusion.frontend() is None:
            ap.error("the frontend backends need nvidia-cudnn-frontend on PYTHONPATH")
        print("frontend", getattr(cudnn_fusion.frontend(), "__version__", "?"), flush=True)
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
    kinds = args.models.split(",")
    models, _ = load_models(opts, kinds)
    watch = Stopwatch(torch.device("cuda"))
    for kind in kinds:
        batches = BATCHES[kind]
        reference = EagerEngine(models[kind], "cuda", "fp16", max_batch=batches[-1])
        if args.backend == "triton":
            fused = triton_engine(models[kind], batches)
        elif args.backend == "frontend-compiled":
            fused = frontend_compiled_engine(models[kind], batches, not args.no_join)
        else:
            if kind == "pose":
                module = FusedFastPose(reference.module,
                                       lambda conv, bn, relu: FrontendConv(conv, bn, "relu" if relu else None))
            else:
                module = frontend_detector(reference.module, FrontendConv)
            graphs = CudaGraphCache(module)
            fused = torch.inference_mode()(lambda x: graphs(x))
        compiled = CompiledEngine(models[kind], "cuda", "fp16", max_batch=batches[-1], mode="reduce-overhead",
                                  batch_sizes=batches, fuse_convs=False)
        compiled.warmup()
        for batch in batches:
            inputs = random_inputs(reference, batch, 3, batch)
            want = reference(inputs[0]).float()
            errors = {name: float((want - call(inputs[0]).float()).abs().amax() / want.abs().amax())
                      for name, call in ((args.backend, fused), ("compiled", compiled))}
            calls = ((args.backend, fused), ("compiled", compiled))
            for name, call in calls:
                for i in range(10):
                    call(inputs[i % 3])
            for round_ in range(args.rounds):
                for name, call in calls:
                    lat = statistics.median(watch.latencies_ms(call, inputs, args.iters))
                    total = watch.total_ms(call, inputs, args.iters)
                    print(f"{kind:8s} {name:9s} b{batch:<3d} round {round_}: latency {lat:7.3f} ms  "
                          f"{batch * args.iters / total * 1e3:9.0f} items/s  max error vs eager fp16 {errors[name]:.1e}",
                          flush=True)
            for name, call in calls if args.profile else ():
                print(f"{kind} {name} b{batch} kernels:", flush=True)
                parts = kernel_breakdown(call, inputs[0], top=args.profile)
                print("    " + " ".join(f"{k} {v:.3f}" for k, v in sorted(parts.items())), flush=True)
        compiled.close()
        if args.backend != "frontend":
            fused.close()


if __name__ == "__main__":
    main()
