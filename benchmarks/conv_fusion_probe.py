"""What fusing each convolution's bias and activation into the convolution kernel would save (cuDNN frontend or Triton).

    python3 benchmarks/conv_fusion_probe.py [--backend frontend|triton] [--models detector,pose] [--reps 20]
        [--plans 4] [--large] [--residual]
    (the frontend backend needs the cuDNN frontend's Python package, `nvidia-cudnn-frontend`, on PYTHONPATH)

Why: the compiled engines run each convolution as a cuDNN kernel followed by an Inductor kernel
that adds the bias and applies the activation (`triton_poi_fused_convolution_leaky_relu_...`).
That epilogue reads and writes the whole output once more; at detector batch 8 the five largest
of them take 0.59 ms of the 3.6-3.7 ms per call (session 11). TensorRT fuses them into the
convolution. The cuDNN frontend can build the same fusion as an operation graph (conv_fprop ->
bias -> leaky ReLU / ReLU), which PyTorch does not expose for leaky ReLU.

For every distinct convolution of the model at each batch, as the engines lay it out (fp16,
channels_last, BatchNorm folded into a bias):
- `conv`: cuDNN's convolution without bias (F.conv2d, cudnn.benchmark), what the engine runs;
- `epilogue`: bias + activation over that output as one Inductor kernel (torch.compile, dynamic);
- `fused`: with `--backend frontend`, the cuDNN frontend graph conv -> bias -> activation, the
  fastest of the first `--plans` plans its heuristics rank (modes A and FALLBACK); with
  `--backend triton`, one Triton implicit-GEMM kernel with the epilogue inside (`triton_conv.py`),
  the fastest of its tiles; and its error against conv + epilogue.
Times are device time per call in a CUDA graph of `reps` calls (`conv_layers.graph_time_ms`),
summed over the model's calls of each shape. The activation is the model's (detector: leaky
ReLU 0.1 after every convolution but the three heads; pose: ReLU after every convolution, which
overstates the pose net's fusable epilogues slightly: its residual branches add before the ReLU).
"""

from __future__ import annotations

import argparse

import torch
import torch._dynamo
import torch.nn.functional as F

from alphapose_trt.bench import BenchOptions, load_models
from alphapose_trt.cli import build_parser
from alphapose_trt.engines.cudnn_fusion import epilogue, event_time_ms, frontend
from alphapose_trt.models.darknet import LEAKY_SLOPE
from conv_layers import BATCHES, conv_calls, graph_time_ms  # benchmarks/, the script's folder
from triton_conv import TritonFusedConv, compiled_epilogue


class FusedConv:
    """conv -> bias -> activation as one cuDNN frontend graph on fixed tensors, fastest plan."""

    def __init__(self, cudnn, handle, x, w, b, y, stride, padding, slope: float | None, max_plans: int,
                 residual: torch.Tensor | None = None) -> None:
        half, fp32 = cudnn.data_type.HALF, cudnn.data_type.FLOAT
        graph = cudnn.pygraph(io_data_type=half, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
        tx = graph.tensor(name="x", dim=list(x.shape), stride=list(x.stride()), data_type=half)
        tw = graph.tensor(name="w", dim=list(w.shape), stride=list(w.stride()), data_type=half)
        tb = graph.tensor(name="b", dim=list(b.shape), stride=list(b.stride()), data_type=half)
        conv = graph.conv_fprop(image=tx, weight=tw, padding=list(padding), stride=list(stride), dilation=[1, 1])
        biased = graph.bias(name="bias", input=conv, bias=tb)
        if residual is not None:
            tr = graph.tensor(name="r", dim=list(residual.shape), stride=list(residual.stride()), data_type=half)
        if slope is None:  # pose bottleneck: the residual joins before the ReLU
            if residual is not None:
                biased = graph.add(name="residual", a=biased, b=tr)
            out = graph.relu(name="act", input=biased)
        else:  # darknet shortcut: the residual joins after the leaky ReLU
            out = graph.leaky_relu(name="act", input=biased, negative_slope=slope)
            if residual is not None:
                out = graph.add(name="residual", a=out, b=tr)
        out.set_output(True).set_data_type(half).set_dim(list(y.shape)).set_stride(list(y.stride()))
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        self.cudnn, self.graph, self.handle = cudnn, graph, handle
        self.pack = {tx: x, tw: w, tb: b, out: y, **({tr: residual} if residual is not None else {})}
        self.built, sizes = [], []
        # the heuristics' first `max_plans` (runtime-fused plans compile with NVRTC: seconds each)
        for plan in range(min(graph.get_execution_plan_count(), max_plans)):
            try:
                graph.build_plan_at_index(plan)
                sizes.append(graph.get_workspace_size_plan_at_index(plan))
                self.built.append(plan)
            except Exception:  # noqa: BLE001 - a plan the backend declines
                continue
        self.plans = len(self.built)
        self.workspace = torch.empty(max(sizes, default=0) + 1, device="cuda", dtype=torch.uint8)
        self.plan = self.built[0] if self.built else 0

    def __call__(self) -> None:
        # the stream of the moment: a CUDA graph captures on a side stream of its own
        self.cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream().cuda_stream)
        self.graph.execute_plan_at_index(self.pack, self.workspace, self.plan, handle=self.handle)

    def fastest(self, reps: int) -> tuple[float, str]:
        """Time every plan; keep the fastest (what cudnn.benchmark does for the split path).

        Returns (ms, how): in a CUDA graph like the other columns, or, where the frontend refuses
        capture, `reps` back-to-back calls between two events (host launch time included)."""
        times: dict[int, tuple[float, str]] = {}
        for plan in self.built:
            self.plan = plan
            try:
                times[plan] = (graph_time_ms(self, reps), "timed in a CUDA graph")
            except Exception:  # noqa: BLE001 - plans that did not build, or that refuse capture
                try:
                    times[plan] = (event_time_ms(self, reps), "timed between events")
                except Exception:  # noqa: BLE001 - a plan that does not run at all
                    continue
        if not times:
            raise RuntimeError(f"none of {self.plans} plans ran")
        self.plan = min(times, key=lambda p: times[p][0])
        return times[self.plan]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("frontend", "triton"), default="frontend", help="what fuses the epilogue")
    ap.add_argument("--models", default="detector,pose")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--plans", type=int, default=4, help="time the heuristics' first PLANS fused plans per shape")
    ap.add_argument("--large", action="store_true", help="only each model's large batch (8 and 64)")
    ap.add_argument("--residual", action="store_true",
                    help="every shape also adds a residual of the output's shape (pose: before the ReLU, "
                         "as its bottlenecks; detector: after the leaky ReLU, as its shortcuts)")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch._dynamo.config.cache_size_limit = 256  # the epilogue is specialised per output layout
    print(torch.__version__, torch.cuda.get_device_name(), "cuDNN", torch.backends.cudnn.version(), flush=True)
    if args.backend == "frontend":
        cudnn = frontend()
        handle = cudnn.create_handle()
        cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream().cuda_stream)
        print("frontend", getattr(cudnn, "__version__", "?"), "backend", cudnn.backend_version(), flush=True)

        def fuse(x, w, b, y, stride, padding, slope, r):
            return FusedConv(cudnn, handle, x, w, b, y, stride, padding, slope, args.plans, r)
    else:
        fuse = TritonFusedConv
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
    kinds = args.models.split(",")
    models, _ = load_models(opts, kinds)
    for kind in kinds:
        slope = LEAKY_SLOPE if kind == "detector" else None
        # the epilogue's own terms: pose ReLU (slope 0) with the residual before it, detector leaky with it after
        act, after = (0.0, False) if slope is None else (slope, True)
        loaded = models[kind]
        module = loaded.module.to("cuda", torch.float16).to(memory_format=torch.channels_last).eval()
        h, w = loaded.input_hw
        for batch in BATCHES[kind][-1:] if args.large else BATCHES[kind]:
            x0 = torch.rand(batch, 3, h, w, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
            totals = {"conv": 0.0, "epilogue": 0.0, "fused": 0.0, "best": 0.0}
            failed = 0
            print(f"\n{kind} b{batch}{' with a residual' if args.residual else ''}: ms per call (x calls of that shape)  "
                  "conv  epilogue  fused  fused error", flush=True)
            for (in_shape, w_shape, stride, padding, dilation, groups), count in conv_calls(module, x0).items():
                if groups != 1 or dilation != (1, 1) or (kind == "detector" and w_shape[0] == 255):
                    continue  # the heads have no activation; no grouped or dilated convolutions here
                x = torch.randn(in_shape, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
                wt = (torch.randn(w_shape, device="cuda", dtype=torch.float16) * 0.05).contiguous(memory_format=torch.channels_last)
                b = (torch.randn(1, w_shape[0], 1, 1, device="cuda", dtype=torch.float16) * 0.1).contiguous(
                    memory_format=torch.channels_last)
                y = F.conv2d(x, wt, None, stride, padding)
                r = torch.randn_like(y) if args.residual else None
                conv_ms = graph_time_ms(lambda: F.conv2d(x, wt, None, stride, padding), args.reps)
                epi_ms = graph_time_ms(lambda: compiled_epilogue(y, b, r, act, not after), args.reps)
                reference = epilogue(y.float(), b.float(), None if r is None else r.float(), act, not after)
                out = torch.empty_like(y)
                try:
                    fused = fuse(x, wt, b, out, stride, padding, slope, r)
                    fused_ms, how = fused.fastest(args.reps)
                    fused()
                    torch.cuda.synchronize()
                    err = float((out.float() - reference).norm() / reference.norm())
                    fused_text = f"{fused_ms:8.4f}  {err:.1e} ({fused.plans} plans; {how})"
                except Exception as exc:  # noqa: BLE001 - report the shape the frontend refuses and go on
                    fused_ms, failed = conv_ms + epi_ms, failed + 1
                    fused_text = f"   -      {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                best_ms = min(conv_ms + epi_ms, fused_ms)
                for name, ms in (("conv", conv_ms), ("epilogue", epi_ms), ("fused", fused_ms), ("best", best_ms)):
                    totals[name] += ms * count
                print(f"  {in_shape} -> {w_shape} s{stride[0]} x{count:<3} {conv_ms:8.4f} {epi_ms:8.4f} {fused_text}", flush=True)
            split = totals["conv"] + totals["epilogue"]
            print(f"{kind} b{batch} total: conv {totals['conv']:.3f} + epilogue {totals['epilogue']:.3f} = {split:.3f} ms; "
                  f"fused {totals['fused']:.3f} ms ({totals['fused'] - split:+.3f}); the faster of the two per shape "
                  f"{totals['best']:.3f} ms; shapes the {args.backend} backend refused: {failed} (counted at the split time)",
                  flush=True)


if __name__ == "__main__":
    main()
