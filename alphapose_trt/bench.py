"""Model and pipeline benchmarks: every backend against an honest eager baseline, same run.

Why this module exists: the seed project's speed-ups were measured against an eager model left in
training mode without no_grad, on a different day. Here the baseline (eager fp32, NCHW, eval(),
inference_mode, cudnn.benchmark) is measured in the same process on the same inputs, inputs
already live on the device and rotate among a few random tensors (so no cache flatters a backend),
and every raw timing goes into `bench.json` next to the exact command that produced it.

Model mode times one engine call: latency = median of single synchronised calls (CUDA events on a
GPU, the host clock with torch.cpu.synchronize on the CPU); throughput = rows per second over
`iters` back-to-back calls with one synchronisation at the end (host launch work overlaps the GPU).
Pipeline mode times whole `process_batch` calls of the fast pipeline against the reference one.
A backend that cannot be built or run here is a table row "unavailable: <reason>", never a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from alphapose_trt.engines.base import PRECISIONS, Engine
from alphapose_trt.errors import AlphaPoseTrtError, one_line
from alphapose_trt.fileio import atomic_write
from alphapose_trt.io.sources import DECODERS
from alphapose_trt.models import synthetic
from alphapose_trt.models.load import LoadedModel, model_kind_of

MODEL_CHOICES = ("detector", "pose", "pipeline")
BACKENDS = ("eager", "eager+graphs", "compiled", "aot", "onnx", "tensorrt")
DEFAULT_BACKENDS = "eager,compiled,aot,onnx,tensorrt"
DEFAULT_BATCHES = {"detector": "1,4,8", "pose": "1,8,32,64", "pipeline": "8"}
BASELINE = ("eager", "fp32")  # (backend, precision) every speed-up is relative to
DEFAULT_FRAME_SIZE = (1920, 1080)  # width, height of generated pipeline frames (1080p)

# Dense fp16 tensor-core peak (TFLOP/s) by device name. H100 PCIe and NVL have lower clocks and
# fewer SMs, so they are deliberately absent: an unknown device gets no "% of peak" column.
FP16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*(SXM|HBM3)", 989.0),
    (r"H200", 989.0),
)

OUTPUT_JSON = "bench.json"
OUTPUT_MD = "bench.md"
REASON_CHARS = 200  # an "unavailable" reason is cut to one short line


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,2,8' -> (1, 2, 8): positive, unique, sorted."""
    try:
        values = sorted({int(v) for v in _split(text)})
    except ValueError:
        raise AlphaPoseTrtError(f"--batch takes a comma list of integers such as 1,8,32, got {text!r}") from None
    if not values or values[0] < 1:
        raise AlphaPoseTrtError(f"--batch sizes must be >= 1, got {text!r}")
    return tuple(values)


def parse_choices(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """A comma list whose items must all be in `allowed`; order kept, duplicates dropped."""
    items = list(dict.fromkeys(_split(text)))
    unknown = [i for i in items if i not in allowed]
    if unknown or not items:
        what = ", ".join(unknown) or "empty list"
        raise AlphaPoseTrtError(f"{flag}: unknown {what}; choose from {', '.join(allowed)}")
    return tuple(items)


def parse_size(text: str, flag: str) -> tuple[int, int]:
    """'64x48' -> (64, 48), both positive."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise AlphaPoseTrtError(f"{flag} takes two integers as AxB, e.g. 64x48, got {text!r}") from None
    if a < 1 or b < 1:
        raise AlphaPoseTrtError(f"{flag} sizes must be positive, got {text!r}")
    return a, b


def _files_by_kind(paths: Sequence[str] | None, kind_of: Callable[[str], str], flag: str) -> dict[str, Path]:
    """Map user files to the model they belong to; two files for one model is an error."""
    out: dict[str, Path] = {}
    for path in paths or ():
        kind = kind_of(path)
        if kind in out:
            raise AlphaPoseTrtError(f"{path}: a second {flag} file for the {kind} model (first: {out[kind]})")
        out[kind] = Path(path)
    return out


def cfg_kind_of(path: str) -> str:
    """A darknet `.cfg` describes the detector, an AlphaPose `.yaml` the pose model."""
    suffix = Path(path).suffix.lower()
    if suffix == ".cfg":
        return "detector"
    if suffix in (".yaml", ".yml"):
        return "pose"
    raise AlphaPoseTrtError(f"{path}: --cfg must be a darknet .cfg (detector) or AlphaPose .yaml (pose)")


@dataclass(frozen=True)
class BenchOptions:
    """Validated benchmark settings (built from the CLI namespace by `from_args`)."""

    model: str
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    batches: tuple[int, ...]
    device: torch.device
    outdir: Path
    iters: int
    warmup: int
    inputs: int
    weights: dict[str, Path]
    cfgs: dict[str, Path]
    img_size: int | None
    pose_input: tuple[int, int] | None
    seed: int
    synthetic_dir: Path | None
    compile_mode: str | None
    frames: int
    frame_size: tuple[int, int]
    max_persons: int
    conf: float
    flip: bool
    video: Path | None
    video_frames: int
    decoders: tuple[str, ...]
    command: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BenchOptions":
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise AlphaPoseTrtError(f"--device {args.device}: CUDA is not available on this machine")
        default_precision = "fp16" if device.type == "cuda" else "fp32"
        video_frames = args.frames if args.video_frames is None else args.video_frames
        for name, value in (("iters", args.iters), ("warmup", args.warmup), ("inputs", args.inputs),
                            ("frames", args.frames), ("video_frames", video_frames), ("max_persons", args.max_persons)):
            minimum = 0 if name == "warmup" else 1
            if value < minimum:
                raise AlphaPoseTrtError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")
        if args.video is not None and not Path(args.video).is_file():
            raise AlphaPoseTrtError(f"{args.video}: video file not found")
        weights = _files_by_kind(args.weights, model_kind_of, "--weights")
        cfgs = _files_by_kind(args.cfg, cfg_kind_of, "--cfg")
        _check_model_files(args.model, weights, cfgs)
        _check_mode_flags(args)
        return cls(
            model=args.model,
            backends=parse_choices(args.backend, BACKENDS, "--backend"),
            precisions=parse_choices(args.precision or default_precision, tuple(PRECISIONS), "--precision"),
            batches=parse_batches(args.batch or DEFAULT_BATCHES[args.model]),
            device=device,
            outdir=Path(args.outdir),
            iters=args.iters,
            warmup=args.warmup,
            inputs=args.inputs,
            weights=weights,
            cfgs=cfgs,
            img_size=args.img_size,
            pose_input=parse_size(args.pose_input, "--pose-input") if args.pose_input else None,
            seed=args.seed,
            synthetic_dir=Path(args.synthetic_dir) if args.synthetic_dir else None,
            compile_mode=args.compile_mode,
            frames=args.frames,
            frame_size=parse_size(args.frame_size, "--frame-size"),
            max_persons=args.max_persons,
            conf=args.conf,
            flip=args.flip,
            video=Path(args.video) if args.video else None,
            video_frames=video_frames,
            decoders=parse_choices(args.decoder, DECODERS, "--decoder"),
            command=getattr(args, "command_line", None) or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        )

    @property
    def engine_dir(self) -> Path:
        """Exported engines (onnx, aot, tensorrt) of this run live beside its results."""
        return self.outdir / "engines"

    def variants(self) -> list[tuple[str, str]]:
        """Requested (backend, precision) pairs; `eager` brings eager+graphs along on CUDA."""
        backends = list(self.backends)
        if "eager" in backends and self.device.type == "cuda" and "eager+graphs" not in backends:
            backends.insert(backends.index("eager") + 1, "eager+graphs")
        return [(b, p) for b in backends for p in self.precisions]


def _check_model_files(model: str, weights: dict[str, Path], cfgs: dict[str, Path]) -> None:
    """Model mode takes files of its own model only; a cfg describes user weights, not synthetic ones."""
    for kind, path in {**weights, **cfgs}.items():
        if model != "pipeline" and kind != model:
            raise AlphaPoseTrtError(f"{path}: belongs to the {kind} model, but --model is {model}")
    for kind, path in cfgs.items():
        if kind not in weights:
            raise AlphaPoseTrtError(
                f"{path}: --cfg needs --weights for the {kind} model (synthetic weights have a fixed layout)"
            )


def _check_mode_flags(args: argparse.Namespace) -> None:
    """Flags that only mean something for another --model are errors, not silently ignored."""
    misplaced = {
        "--img-size": args.img_size is not None and args.model == "pose",
        "--pose-input": args.pose_input is not None and args.model == "detector",
        "--video": args.video is not None and args.model != "pipeline",
    }
    for flag, bad in misplaced.items():
        if bad:
            raise AlphaPoseTrtError(f"{flag} does not apply to --model {args.model}")
    if args.decoder != "opencv" and args.video is None:
        raise AlphaPoseTrtError("--decoder chooses how --video is decoded; give --video too")


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
def synthetic_weights(folder: Path, seed: int, kinds: Sequence[str] = ("detector", "pose")) -> dict[str, Path]:
    """Synthetic weights of `kinds`, written once into `folder` and reused by later runs.

    Speed does not depend on the weight values, so one cached set serves every run; only the
    models asked for are written (the detector file alone is 252 MB). Each file is written under a
    temporary name and moved into place, so a file at its final path is complete.
    """
    writers = {
        "detector": (synthetic.YOLOV3_SPP_FILENAME, synthetic.write_synthetic_yolov3_spp),
        "pose": (synthetic.FASTPOSE_FILENAME, synthetic.write_synthetic_fastpose),
    }
    out = {}
    for kind in kinds:
        name, write = writers[kind]
        path = folder / name
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                os.replace(write(Path(tmp) / name, seed), path)
        out[kind] = path
    return out


def _synthetic_folder(opts: BenchOptions) -> Path:
    from alphapose_trt.download import cache_dir

    return opts.synthetic_dir or cache_dir() / "synthetic" / f"seed{opts.seed}"


def load_models(opts: BenchOptions, kinds: Sequence[str]) -> tuple[dict[str, LoadedModel], dict[str, str]]:
    """The models to benchmark and where their weights came from (a file or 'synthetic')."""
    from alphapose_trt.models.load import load_detector, load_pose

    missing = [k for k in kinds if k not in opts.weights]
    files = {**synthetic_weights(_synthetic_folder(opts), opts.seed, missing), **opts.weights}
    sources = {k: str(files[k]) if k in opts.weights else f"synthetic seed {opts.seed} ({files[k]})" for k in kinds}
    models: dict[str, LoadedModel] = {}
    if "detector" in kinds:
        models["detector"] = load_detector(files["detector"], opts.cfgs.get("detector"), opts.img_size)
    if "pose" in kinds:
        pose = load_pose(files["pose"], opts.cfgs.get("pose"))
        models["pose"] = dataclasses.replace(pose, input_hw=opts.pose_input) if opts.pose_input else pose
    return models, sources


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
class Stopwatch:
    """Marks on the device's timeline: CUDA events on a GPU, the host clock on the CPU.

    `mark()` returns an opaque mark; `ms(start, end)` waits for `end` and returns the elapsed
    milliseconds. On the CPU the mark synchronises first (torch.cpu.synchronize semantics), so
    the same measuring code is right on both.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        torch.cpu.synchronize()
        return time.perf_counter()

    def ms(self, start: Any, end: Any) -> float:
        if self.cuda:
            end.synchronize()
            return float(start.elapsed_time(end))
        return (end - start) * 1e3

    def latencies_ms(
        self, call: Callable[[torch.Tensor], Any], inputs: Sequence[torch.Tensor], iters: int
    ) -> list[float]:
        """One synchronised call per sample: what a single request waits."""
        out = []
        for i in range(iters):
            start = self.mark()
            call(inputs[i % len(inputs)])
            out.append(self.ms(start, self.mark()))
        return out

    def total_ms(self, call: Callable[[torch.Tensor], Any], inputs: Sequence[torch.Tensor], iters: int) -> float:
        """`iters` back-to-back calls, synchronised once: steady-state throughput."""
        start = self.mark()
        for i in range(iters):
            call(inputs[i % len(inputs)])
        return self.ms(start, self.mark())


def random_inputs(engine: Engine, batch: int, count: int, seed: int) -> list[torch.Tensor]:
    """`count` different random batches, already on the engine's device in its input dtype.

    Drawn like the images the synthetic weights are calibrated on (smooth blobs plus fine noise):
    on uniform noise the synthetic detector's box logits grow until exp(w, h) overflows fp16, and
    an output full of inf makes every error against a reference NaN (session 13)."""
    generator = torch.Generator().manual_seed(seed)
    h, w = engine.meta.input_hw
    return [synthetic.random_images(generator, batch, h, w).to(engine.device, engine.input_dtype) for _ in range(count)]


@dataclass
class Row:
    """Raw measurements of one (backend, precision, batch); `reason` set when unavailable."""

    backend: str
    precision: str
    batch: int
    build_s: float | None = None
    first_call_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    throughput_iters: int = 0
    throughput_ms: float | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def latency_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def throughput(self) -> float:
        """Items (images or crops) per second."""
        return self.batch * self.throughput_iters / (self.throughput_ms / 1e3)


def measure(engine: Engine, backend: str, batch: int, opts: BenchOptions, watch: Stopwatch) -> Row:
    """Warm up, then latency samples and one throughput run of `engine` at `batch`."""
    inputs = random_inputs(engine, batch, opts.inputs, opts.seed + batch)
    start = watch.mark()
    engine(inputs[0])
    first = watch.ms(start, watch.mark())
    for i in range(opts.warmup):
        engine(inputs[i % len(inputs)])
    latencies = watch.latencies_ms(engine, inputs, opts.iters)
    total = watch.total_ms(engine, inputs, opts.iters)
    return Row(backend, engine.meta.precision, batch, first_call_ms=first, latencies_ms=latencies,
               throughput_iters=opts.iters, throughput_ms=total)


# ---------------------------------------------------------------------------------------------
# Engines per backend
# ---------------------------------------------------------------------------------------------
def _build_eager(model: LoadedModel, precision: str, batches: Sequence[int], opts: BenchOptions) -> Engine:
    from alphapose_trt.engines.eager import EagerEngine

    return EagerEngine(model, opts.device, precision, max_batch=max(batches))


def _build_eager_graphs(model: LoadedModel, precision: str, batches: Sequence[int], opts: BenchOptions) -> Engine:
    from alphapose_trt.engines.eager import EagerEngine

    if opts.device.type != "cuda":
        raise AlphaPoseTrtError("CUDA graphs need a CUDA device")
    return EagerEngine(model, opts.device, precision, max_batch=max(batches), cuda_graphs=True)


def build_baseline(model: LoadedModel, max_batch: int, device: torch.device) -> Engine:
    """AlphaPose's way of running a model: eager fp32, NCHW (no channels_last), eval mode."""
    from alphapose_trt.engines.eager import EagerEngine

    # tf32=True: PyTorch's default for fp32 convolutions, i.e. what an AlphaPose user runs
    return EagerEngine(model, device, "fp32", max_batch=max_batch, channels_last=False, tf32=True)


def _build_compiled(model: LoadedModel, precision: str, batches: Sequence[int], opts: BenchOptions) -> Engine:
    """torch.compile specialised to exactly the benchmarked batches; build time includes warmup."""
    from alphapose_trt.engines.compiled import CompiledEngine

    sizes = tuple(sorted(set(batches)))
    engine = CompiledEngine(
        model, opts.device, precision, max_batch=sizes[-1], mode=opts.compile_mode, batch_sizes=sizes
    )
    engine.warmup()
    return engine


def _exported_builder(fmt: str) -> Callable[..., Engine]:
    """Export with a dynamic batch covering the benchmarked batches, then open the file."""

    def build(model: LoadedModel, precision: str, batches: Sequence[int], opts: BenchOptions) -> Engine:
        """Batch range (smallest, largest, largest): TensorRT tunes its kernels for the largest."""
        from alphapose_trt.engines import _formats, export_engine, open_engine

        lo, hi = min(batches), max(batches)
        path = opts.engine_dir / f"{model.kind}-{precision}-b{lo}-{hi}{_formats()[fmt].suffix}"
        export_engine(model, fmt, path, (lo, hi, hi), precision, opts.device)
        return open_engine(path, kind=model.kind, device=opts.device)

    return build


BUILDERS: dict[str, Callable[..., Engine]] = {
    "eager": _build_eager,
    "eager+graphs": _build_eager_graphs,
    "compiled": _build_compiled,
    "aot": _exported_builder("aot"),
    "onnx": _exported_builder("onnx"),
    "tensorrt": _exported_builder("tensorrt"),
}


def _timed_build(build: Callable[[], Engine], device: torch.device) -> tuple[Engine, float]:
    start = time.perf_counter()
    engine = build()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return engine, time.perf_counter() - start


def _release(engine: Engine | None, device: torch.device) -> None:
    """Free an engine's device memory before the next one is built."""
    if engine is not None:
        engine.close()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Model mode
# ---------------------------------------------------------------------------------------------
def count_flops(module: torch.nn.Module, input_hw: tuple[int, int], device: torch.device, dtype: torch.dtype) -> int:
    """FLOPs of one item (batch 1), counted by torch's FlopCounterMode (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, *input_hw, device=device, dtype=dtype)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(x)
    return int(counter.get_total_flops())


def peak_tflops(device_name: str) -> float | None:
    """Dense fp16 tensor peak for a known device name, else None."""
    for pattern, peak in FP16_PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return peak
    return None


def _bench_variant(model: LoadedModel, backend: str, precision: str, opts: BenchOptions, watch: Stopwatch) -> list[Row]:
    """All batches of one (backend, precision); failures become 'unavailable' rows."""
    try:
        engine, build_s = _timed_build(lambda: BUILDERS[backend](model, precision, opts.batches, opts), opts.device)
    except Exception as exc:  # any backend failure is reported, and the run goes on
        _release(None, opts.device)
        return [Row(backend, precision, b, reason=one_line(exc, REASON_CHARS)) for b in opts.batches]
    rows = []
    for batch in opts.batches:
        try:
            row = measure(engine, backend, batch, opts, watch)
        except Exception as exc:
            row = Row(backend, precision, batch, reason=one_line(exc, REASON_CHARS))
            _release(None, opts.device)
        rows.append(dataclasses.replace(row, build_s=build_s))
    _release(engine, opts.device)
    return rows


def _bench_baseline(model: LoadedModel, opts: BenchOptions, watch: Stopwatch) -> tuple[list[Row], int]:
    """Baseline rows (must succeed: every speed-up divides by them) and FLOPs per item."""
    engine, build_s = _timed_build(lambda: build_baseline(model, max(opts.batches), opts.device), opts.device)
    try:
        flops = count_flops(engine.module, model.input_hw, opts.device, torch.float32)
        rows = [dataclasses.replace(measure(engine, BASELINE[0], b, opts, watch), build_s=build_s)
                for b in opts.batches]
    finally:
        _release(engine, opts.device)
    return rows, flops


def bench_model(opts: BenchOptions, model: LoadedModel, watch: Stopwatch) -> tuple[list[Row], int]:
    """Rows for the baseline and every requested (backend, precision, batch), and FLOPs per item."""
    rows, flops = _bench_baseline(model, opts, watch)
    for backend, precision in (v for v in opts.variants() if v != BASELINE):
        rows += _bench_variant(model, backend, precision, opts, watch)
    return rows, flops


def summarize_rows(rows: Sequence[Row], flops_per_item: int, peak: float | None) -> list[dict[str, Any]]:
    """Raw rows plus derived numbers: speed-ups vs the baseline at the same batch, TFLOP/s, % peak."""
    base = {r.batch: r for r in rows if (r.backend, r.precision) == BASELINE and r.ok}
    out = []
    for row in rows:
        entry: dict[str, Any] = {**dataclasses.asdict(row), "status": "ok" if row.ok else "unavailable"}
        if row.ok:
            tflops = flops_per_item * row.throughput / 1e12
            entry.update(
                latency_ms=row.latency_ms,
                throughput_items_s=row.throughput,
                latency_speedup=base[row.batch].latency_ms / row.latency_ms,
                throughput_speedup=row.throughput / base[row.batch].throughput,
                tflops=tflops,
                pct_peak=100.0 * tflops / peak if peak else None,
            )
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# Pipeline mode
# ---------------------------------------------------------------------------------------------
def make_frames(count: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """`count` RGB uint8 frames of (width, height) `size`: smooth random colour fields."""
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    frames = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(1, h // 64), max(1, w // 64), 3), dtype=np.uint8)
        frames.append(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR))
    return frames


def host_rss_mb() -> dict[str, float | None]:
    """Current (from /proc) and peak (from getrusage) resident memory of this process, MiB."""
    current = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"current": current, "peak": peak}


@dataclass
class PipelineRow:
    """One pipeline measured end to end; `reason` set when unavailable."""

    backend: str
    precision: str
    batch: int
    frames: int = 0
    build_s: float | None = None
    batch_ms: list[float] = field(default_factory=list)
    persons_per_frame: float = 0.0
    gpu_peak_mb: float | None = None
    rss_mb: float | None = None
    gc_pauses: list[tuple[int, int, float]] = field(default_factory=list)  # (batch, generation, ms) over 1 ms
    video: dict[str, dict[str, Any]] | None = None  # per decoder: pipeline_fps, decode_fps(_runs), ratio
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def fps(self) -> float:
        return self.frames / (sum(self.batch_ms) / 1e3)

    @property
    def median_fps(self) -> float:
        """Frames/s of the median batch: the steady rate, beside `fps`, which a one-off stall (an
        Inductor rebuild, a page-cache miss) drags down for the whole run."""
        return self.frames / len(self.batch_ms) / (statistics.median(self.batch_ms) / 1e3)


def _chunks(frames: Sequence[np.ndarray], size: int) -> list[Sequence[np.ndarray]]:
    return [frames[i : i + size] for i in range(0, len(frames), size)]


def time_pipeline(
    pipeline: Any, frames: Sequence[np.ndarray], batch: int, warmup: int, device: torch.device
) -> PipelineRow:
    """Host wall time between the results of consecutive batches of `process_stream` (as `infer`
    runs it), so the total is the end-to-end time for all frames."""
    chunks = _chunks(frames, batch)
    for _ in pipeline.process_stream((None, chunks[i % len(chunks)], None) for i in range(warmup)):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, persons, pauses = [], 0, []
    with _gc_pauses(lambda: len(times), pauses):
        start = time.perf_counter()
        for _, results in pipeline.process_stream((None, chunk, None) for chunk in chunks):
            now = time.perf_counter()
            times.append((now - start) * 1e3)
            start = now
            persons += sum(len(r) for r in results)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return PipelineRow("", "", batch, frames=len(frames), batch_ms=times, persons_per_frame=persons / len(frames),
                       gpu_peak_mb=peak, rss_mb=host_rss_mb()["current"], gc_pauses=pauses)


@contextlib.contextmanager
def _gc_pauses(batch: Callable[[], int], pauses: list[tuple[int, int, float]]) -> Iterator[None]:
    """Record Python garbage collections over 1 ms as (batch, generation, ms) while the block runs:
    a full collection over the benchmark's objects can stall one batch for tens of ms."""
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            ms = (time.perf_counter() - started.pop()) * 1e3
            if ms > 1.0:
                pauses.append((batch(), info["generation"], round(ms, 1)))

    gc.callbacks.append(on_gc)
    try:
        yield
    finally:
        gc.callbacks.remove(on_gc)


def _read_video(path: Path, limit: int, on_frame: Callable[[np.ndarray], None]) -> int:
    """Decode up to `limit` frames with cv2.VideoCapture, handing each (BGR) to `on_frame`."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise AlphaPoseTrtError(f"{path}: OpenCV cannot open this video")
    count = 0
    try:
        while count < limit:
            ok, frame = capture.read()
            if not ok:
                break
            on_frame(frame)
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise AlphaPoseTrtError(f"{path}: no frame could be decoded")
    return count


def decode_fps(path: Path, limit: int, decoder: str = "opencv", device: torch.device | None = None) -> float:
    """Frames per second of decoding alone (the ceiling of any pipeline reading this file): a bare
    cv2.VideoCapture.read loop (BGR frames), a bare PyAV decode loop with FFmpeg's threads (YUV
    frames, nothing copied or converted), each with the file opened inside the timing, or NVDEC
    as the source runs it on `device` (there is no bare equivalent of its decoding process),
    started before the timing."""
    if decoder == "nvdec":
        return source_fps(path, limit, decoder, device)
    start = time.perf_counter()
    if decoder == "pyav":
        from alphapose_trt.io.pyav import open_container

        with open_container(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            count = sum(1 for _ in zip(range(limit), container.decode(stream)))
    else:
        count = _read_video(path, limit, lambda frame: None)
    return count / (time.perf_counter() - start)


def source_fps(path: Path, limit: int, decoder: str = "opencv", device: torch.device | None = None) -> float:
    """Frames per second of the project's video source alone (`open_source`, as `infer` reads: for
    OpenCV a decoding thread and the RGB conversion pool, for PyAV a decoding thread and I420 ->
    RGB on the device, for NVDEC decoder sessions on stretches of the file and NV12 -> RGB on the
    GPU), with nothing else running. The clock starts after `Source.warm_up` (NVDEC: its decoding
    process's seconds of start-up, which a long video amortizes; PyAV: building the GPU
    conversion; OpenCV: nothing)."""
    with _ready_source(path, decoder, None if device is None else str(device)) as source:
        frames = iter(source)  # held past the clock: closing the pass (its reader, its decoders) is not reading
        count, start = 0, time.perf_counter()
        for _ in zip(range(limit), frames):
            count += 1
        if torch.cuda.is_available() and (device is None or device.type == "cuda"):
            torch.cuda.synchronize(device)  # frames made on the GPU are complete
        return count / (time.perf_counter() - start)


@contextlib.contextmanager
def _ready_source(path: Path, decoder: str, device: str | None) -> Iterator[Any]:
    """The video source as `infer` opens it, its one-off start-up done (`Source.warm_up`), so a
    clock started inside measures reading. For NVDEC the decoding processes closed earlier have
    ended first (`decode_process.wait_closed`): one pass's teardown is not timed in the next."""
    from alphapose_trt.io.sources import open_source

    if decoder == "nvdec":
        from alphapose_trt.io.decode_process import wait_closed

        wait_closed()
    with open_source(video=path, decoder=decoder, device=device) as source:
        source.warm_up()
        yield source


def video_pipeline_fps(pipeline: Any, path: Path, limit: int, batch: int, decoder: str = "opencv") -> float:
    """Frames per second of the whole `infer` data path from the file: the source (OpenCV: a
    decoding thread, BGR->RGB on a small pool; PyAV and NVDEC: frames on the GPU), batches of `batch`
    frames, `process_stream`; the clock starts after `Source.warm_up`, as in `source_fps`."""
    from itertools import islice

    from alphapose_trt.api import batched

    with _ready_source(path, decoder, str(pipeline.device)) as source:
        count, start = 0, time.perf_counter()
        chunks = batched((f.image for f in islice(source, limit)), batch)
        for _, results in pipeline.process_stream((None, chunk, None) for chunk in chunks):
            count += len(results)
        return count / (time.perf_counter() - start)


def _pipeline_config(opts: BenchOptions, batch: int) -> Any:
    from alphapose_trt.pipeline.runner import PipelineConfig

    return PipelineConfig(conf=opts.conf, max_persons=opts.max_persons, flip=opts.flip,
                          det_batch=batch, pose_batch=_crops_per_call(opts, batch))


SMALL_POSE_BUCKET = 8


def _crops_per_call(opts: BenchOptions, batch: int) -> int:
    """Crops of a full batch of frames: every person, twice with flip test (one pose call)."""
    return batch * opts.max_persons * (2 if opts.flip else 1)


def _pose_batches(opts: BenchOptions) -> tuple[int, ...]:
    """Crop counts a pose engine must serve: a full call, and one small bucket (8) for calls with
    fewer persons. Fewer buckets than powers of two: each is a separate (slow) compiled build."""
    full = _crops_per_call(opts, max(opts.batches))
    return tuple(sorted({min(SMALL_POSE_BUCKET, full), full}))


def _bench_reference(models: dict[str, LoadedModel], frames: list[np.ndarray], opts: BenchOptions) -> PipelineRow:
    from alphapose_trt.pipeline.runner import ReferencePipeline

    det = build_baseline(models["detector"], 1, opts.device)
    pose = build_baseline(models["pose"], 1, opts.device)
    try:
        pipeline = ReferencePipeline(det, pose, _pipeline_config(opts, 1))
        row = time_pipeline(pipeline, frames, 1, min(opts.warmup, len(frames)), opts.device)
    finally:
        _release(det, opts.device)
        _release(pose, opts.device)
    return dataclasses.replace(row, backend="reference", precision="fp32")


def _bench_fast(models: dict[str, LoadedModel], frames: list[np.ndarray], backend: str, precision: str,
                opts: BenchOptions) -> list[PipelineRow]:
    """One fast pipeline per (backend, precision), timed at each frames-per-call batch."""
    engines: list[Engine] = []
    try:
        start = time.perf_counter()
        engines.append(BUILDERS[backend](models["detector"], precision, opts.batches, opts))
        engines.append(BUILDERS[backend](models["pose"], precision, _pose_batches(opts), opts))
        build_s = time.perf_counter() - start
    except Exception as exc:  # any backend failure is reported, and the run goes on
        for engine in engines:
            _release(engine, opts.device)
        return [PipelineRow(backend, precision, b, reason=one_line(exc, REASON_CHARS)) for b in opts.batches]
    rows = []
    for batch in opts.batches:
        try:
            row = _time_fast(engines, frames, batch, opts)
        except Exception as exc:
            row = PipelineRow(backend, precision, batch, reason=one_line(exc, REASON_CHARS))
            _release(None, opts.device)
        rows.append(dataclasses.replace(row, backend=backend, precision=precision, build_s=build_s))
    for engine in engines:
        _release(engine, opts.device)
    return rows


def _time_fast(engines: list[Engine], frames: list[np.ndarray], batch: int, opts: BenchOptions) -> PipelineRow:
    """The fast pipeline over the in-memory frames, and from --video when given.

    The video ratio divides by the faster of two decode-alone runs, right before and right after
    the pipeline's video run. Why: decoding speed drifts with the host (472 to 850 frames/s on the
    lent H100 machines, measured), so one measurement at the start of a long benchmark could make
    the ratio look better or worse than it is; the faster neighbour is the conservative ceiling.
    """
    from alphapose_trt.pipeline.runner import PosePipeline

    pipeline = PosePipeline(engines[0], engines[1], opts.device, _pipeline_config(opts, batch))
    row = time_pipeline(pipeline, frames, batch, opts.warmup, opts.device)
    if opts.video is not None:
        row.video = {}
        for decoder in opts.decoders:
            before = decode_fps(opts.video, opts.video_frames, decoder, opts.device)
            fps = video_pipeline_fps(pipeline, opts.video, opts.video_frames, batch, decoder)
            runs = [before, decode_fps(opts.video, opts.video_frames, decoder, opts.device)]
            row.video[decoder] = {"decode_fps": max(runs), "decode_fps_runs": runs, "pipeline_fps": fps,
                                  "ratio": fps / max(runs)}
    return row


def bench_pipeline(opts: BenchOptions, models: dict[str, LoadedModel]) -> tuple[list[PipelineRow], dict[str, float] | None]:
    """Reference row first, then every fast (backend, precision, batch); decode fps of --video
    per decoder."""
    frames = make_frames(opts.frames, opts.frame_size, opts.seed)
    video_decode = None if opts.video is None else {
        decoder: decode_fps(opts.video, opts.video_frames, decoder, opts.device) for decoder in opts.decoders}
    rows = [_bench_reference(models, frames, opts)]
    for backend, precision in opts.variants():
        rows += _bench_fast(models, frames, backend, precision, opts)
    return rows, video_decode


def summarize_pipeline(rows: Sequence[PipelineRow]) -> list[dict[str, Any]]:
    """Raw rows plus frames/s and speed-up over the reference pipeline (the first row)."""
    reference = next(r for r in rows if r.backend == "reference")
    out = []
    for row in rows:
        entry: dict[str, Any] = {**dataclasses.asdict(row), "status": "ok" if row.ok else "unavailable"}
        if row.ok:
            entry.update(fps=row.fps, median_fps=row.median_fps, speedup=row.fps / reference.fps)
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# Environment and report
# ---------------------------------------------------------------------------------------------
def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_driver() -> str | None:
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Device, driver, CUDA and library versions: what a timing is meaningless without."""
    from alphapose_trt import __version__

    host = f"{_cpu_name()} ({os.cpu_count()} CPU cores)"
    info: dict[str, Any] = {
        "device": host,
        "host": host,  # pipeline and video rates move with the host as much as with the GPU
        "device_type": device.type,
        "torch": torch.__version__,
        "alphapose_trt": __version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "libraries": {n: _package_version(n) for n in ("onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt")},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gb=round(props.total_memory / 1e9, 1),
            driver=_nvidia_driver(),
            cudnn=torch.backends.cudnn.version(),
            tf32_conv=torch.backends.cudnn.allow_tf32,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            cudnn_frontend=_cudnn_frontend_version(),
        )
    return info


def _cudnn_frontend_version() -> str | None:
    """The cuDNN frontend's version where it loads: then `compiled` fp16 engines fuse their convolutions."""
    from alphapose_trt.engines.cudnn_fusion import frontend

    module = frontend()
    return None if module is None else getattr(module, "__version__", "?")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _header(report: dict[str, Any]) -> list[str]:
    env, s = report["environment"], report["settings"]
    cuda = f", driver {env.get('driver') or '?'}, CUDA {env['cuda']}" if env["device_type"] == "cuda" else ""
    if report["model"] == "pipeline":
        method = [
            f"- timing: host wall clock of the whole `process_stream` over the frames (as `infer` runs: "
            f"several batches in flight, every result back on the host), after {s['warmup']} warm-up batches; "
            "median-batch frames/s is the steady rate without one-off stalls",
            "- baseline: the reference pipeline (AlphaPose's way: per frame and per crop, eager fp32), this run",
        ]
    else:
        timer = "CUDA events" if env["device_type"] == "cuda" else "host clock"
        method = [
            f"- timing: {timer}; median latency of {s['iters']} synchronised calls, throughput over "
            f"{s['iters']} back-to-back calls, after {s['warmup']} warm-up calls, {s['inputs']} rotating inputs",
            "- baseline: eager fp32, NCHW, eval() + inference_mode + cudnn.benchmark, PyTorch's default TF32 convolutions, measured in this run",
        ]
    return [
        f"# alphapose-trt bench: {report['model']}",
        "",
        f"- device: {env['device']}{cuda}; host: {env.get('host', '?')}",
        f"- torch: {env['torch']} (alphapose-trt {env['alphapose_trt']}){_fusion_note(env)}",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        *method,
    ]


def _fusion_note(env: dict[str, Any]) -> str:
    """Whether `compiled` fp16 engines ran fused convolutions (where the cuDNN frontend loads)."""
    version = env.get("cudnn_frontend")
    return f"; cuDNN frontend {version}: compiled fp16 engines fuse each convolution with its epilogue" if version else ""


def _row_cells(entry: dict[str, Any], peak: bool) -> list[str]:
    head = [entry["backend"], entry["precision"], str(entry["batch"])]
    if entry["status"] != "ok":
        reason = "unavailable: " + entry["reason"].replace("|", "/")
        return head + [reason] + ["-"] * (6 + peak)
    cells = [_fmt(entry["latency_ms"], 3), _fmt(entry["throughput_items_s"], 1), _fmt(entry["latency_speedup"]) + "x",
             _fmt(entry["throughput_speedup"]) + "x", f"{entry['tflops']:.3g}"]
    if peak:
        cells.append(_fmt(entry["pct_peak"], 1))
    return head + cells + [_fmt(entry["build_s"], 1)]


def _model_table(report: dict[str, Any]) -> list[str]:
    info = report["model_info"]
    peak = info["peak_tflops"] is not None
    h, w = info["input_hw"]
    lines = [
        f"- model: {report['model']}, input {h}x{w}, {info['flops_per_item'] / 1e9:.2f} GFLOP/item "
        f"(FlopCounterMode, batch 1); weights: {info['weights']}",
        f"- peak: {info['peak_tflops']} TFLOP/s dense fp16" if peak else "- peak: unknown device, no % of peak",
        "",
    ]
    columns = ["backend", "precision", "batch", "latency ms", "throughput items/s", "latency speed-up",
               "throughput speed-up", "TFLOP/s"] + (["% fp16 peak"] if peak else []) + ["build s"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_row_cells(e, peak)) + " |" for e in report["rows"]]
    return lines


def _pipeline_cells(entry: dict[str, Any], decoders: Sequence[str]) -> list[str]:
    head = [entry["backend"], entry["precision"], str(entry["batch"])]
    if entry["status"] != "ok":
        return head + ["unavailable: " + entry["reason"].replace("|", "/")] + ["-"] * (7 + 2 * len(decoders))
    cells = [_fmt(entry["fps"], 1), _fmt(entry["median_fps"], 1), _fmt(entry["speedup"]) + "x", _fmt(entry["persons_per_frame"], 1),
             _fmt(entry["gpu_peak_mb"], 0), _fmt(entry["rss_mb"], 0), _fmt(entry["build_s"], 1)]
    for decoder in decoders:
        v = (entry["video"] or {}).get(decoder, {})
        cells += [_fmt(v.get("pipeline_fps"), 1), _fmt(v.get("ratio"), 3)]
    return head + cells


def _pipeline_table(report: dict[str, Any]) -> list[str]:
    info = report["pipeline_info"]
    decoders = list(info["decode_fps"] or {})
    w, h = info["frame_size"]
    rss = info["rss_start_mb"], info["rss_end_mb"]
    lines = [
        f"- frames: {info['frames']} generated {w}x{h} RGB frames in memory, max {info['max_persons']} persons "
        f"per frame (conf {info['conf']}, flip {info['flip']}); weights: {info['weights']}",
        f"- host RSS: {_fmt(rss[0], 0)} MiB at start, {_fmt(rss[1], 0)} MiB at end "
        f"(peak {_fmt(info['rss_peak_mb'], 0)})",
    ]
    if decoders:
        alone = ", ".join(f"{d} {fps:.1f}" for d, fps in info["decode_fps"].items())
        lines.append(f"- video: {info['video']}, up to {info['video_frames']} frames read per run; decoding alone at "
                     f"the start, frames/s: {alone}; each row's "
                     "video/decode divides by the faster of two decode-alone runs with the same decoder just "
                     "before and after its video run (`video.<decoder>.decode_fps_runs` in the json); NVDEC's decoding "
                     "process is started before each timed read (its start-up is a one-off per video)")
    columns = ["pipeline", "precision", "frames/call", "frames/s", "median-batch frames/s", "speed-up vs reference",
               "persons/frame", "GPU peak MiB", "host RSS MiB", "build s"]
    for decoder in decoders:
        columns += [f"video frames/s ({decoder})", f"video/decode ({decoder})"]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_pipeline_cells(e, decoders)) + " |" for e in report["rows"]]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """bench.md: header lines (device, torch, date, command) and the table, from the json report."""
    table = _pipeline_table(report) if report["model"] == "pipeline" else _model_table(report)
    return "\n".join(_header(report) + table) + "\n"


def write_report(report: dict[str, Any], outdir: Path) -> tuple[Path, Path]:
    """bench.json (everything, raw timings included) and bench.md, each written atomically."""
    paths = outdir / OUTPUT_JSON, outdir / OUTPUT_MD
    with atomic_write(paths[0]) as fh:
        json.dump(report, fh, indent=1)
    with atomic_write(paths[1]) as fh:
        fh.write(render_markdown(report))
    return paths


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
def _model_report(opts: BenchOptions, watch: Stopwatch, env: dict[str, Any]) -> dict[str, Any]:
    models, sources = load_models(opts, [opts.model])
    model = models[opts.model]
    rows, flops = bench_model(opts, model, watch)
    peak = peak_tflops(env["device"]) if opts.device.type == "cuda" else None
    info = {"input_hw": list(model.input_hw), "flops_per_item": flops, "peak_tflops": peak,
            "weights": sources[opts.model]}
    return {"model_info": info, "rows": summarize_rows(rows, flops, peak)}


def _pipeline_report(opts: BenchOptions) -> dict[str, Any]:
    rss_start = host_rss_mb()["current"]
    models, sources = load_models(opts, ["detector", "pose"])
    rows, video_decode = bench_pipeline(opts, models)
    rss = host_rss_mb()
    info = {"frames": opts.frames, "frame_size": list(opts.frame_size), "max_persons": opts.max_persons,
            "conf": opts.conf, "flip": opts.flip, "weights": "; ".join(f"{k}: {v}" for k, v in sources.items()),
            "video": str(opts.video) if opts.video else None, "video_frames": opts.video_frames,
            "decode_fps": video_decode,
            "rss_start_mb": rss_start, "rss_end_mb": rss["current"], "rss_peak_mb": rss["peak"]}
    return {"pipeline_info": info, "rows": summarize_pipeline(rows)}


def run(opts: BenchOptions) -> dict[str, Any]:
    """Run the benchmark described by `opts` and return the report (not yet written)."""
    env = environment(opts.device)
    settings = {k: getattr(opts, k) for k in ("backends", "precisions", "batches", "iters", "warmup", "inputs",
                                              "seed", "compile_mode")}
    report: dict[str, Any] = {
        "command": opts.command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": opts.model,
        "environment": env,
        "settings": {**settings, "device": str(opts.device)},
    }
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # part of the honest baseline; every backend gets it
    try:
        if opts.model == "pipeline":
            report.update(_pipeline_report(opts))
        else:
            report.update(_model_report(opts, Stopwatch(opts.device), env))
    finally:
        torch.backends.cudnn.benchmark = previous
    return report


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `alphapose-trt bench`."""
    from alphapose_trt.engines.compiled import COMPILE_MODES
    from alphapose_trt.pipeline.detect import CONF_THRESHOLD

    parser.add_argument("--model", choices=MODEL_CHOICES, default="pose", help="what to time (default: pose)")
    parser.add_argument("--backend", default=DEFAULT_BACKENDS,
                        help=f"comma list from {', '.join(BACKENDS)}; eager adds eager+graphs on CUDA "
                             f"(default: {DEFAULT_BACKENDS})")
    parser.add_argument("--precision", default=None,
                        help="comma list of fp16, fp32 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--batch", default=None,
                        help="comma list of batch sizes; frames per call in pipeline mode "
                             f"(default: {'; '.join(f'{k} {v}' for k, v in DEFAULT_BATCHES.items())})")
    parser.add_argument("--iters", type=int, default=100, help="timed calls per measurement (default: 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (default: 10)")
    parser.add_argument("--inputs", type=int, default=3, help="random input batches to rotate among (default: 3)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    parser.add_argument("--outdir", default="bench-results", help="where bench.json, bench.md and engines go")
    parser.add_argument("--weights", action="append", metavar="FILE",
                        help="real weights (.weights detector, .pth pose); default: synthetic weights")
    parser.add_argument("--cfg", action="append", metavar="FILE", help="darknet .cfg or AlphaPose .yaml for --weights")
    parser.add_argument("--img-size", type=int, default=None, help="detector input side (default: 608)")
    parser.add_argument("--pose-input", default=None, metavar="HxW", help="pose input size override, e.g. 64x48")
    parser.add_argument("--seed", type=int, default=0, help="seed of synthetic weights and inputs")
    parser.add_argument("--synthetic-dir", default=None, help="cache folder of synthetic weights")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default=None,
                        help="torch.compile mode (default: max-autotune on CUDA, default on CPU)")
    parser.add_argument("--frames", type=int, default=64, help="pipeline: frames in memory")
    parser.add_argument("--video-frames", type=int, default=None,
                        help="pipeline: frames read from --video per run (default: --frames); a longer read "
                             "weighs the start and end of a pass less, as a long video does")
    parser.add_argument("--frame-size", default="x".join(map(str, DEFAULT_FRAME_SIZE)), metavar="WxH",
                        help="pipeline: generated frame size (default: 1920x1080)")
    parser.add_argument("--max-persons", type=int, default=10, help="pipeline: persons kept per frame")
    parser.add_argument("--conf", type=float, default=CONF_THRESHOLD,
                        help=f"pipeline: detector objectness threshold (default: AlphaPose's {CONF_THRESHOLD})")
    parser.add_argument("--flip", action="store_true", help="pipeline: flip test")
    parser.add_argument("--video", default=None, metavar="FILE",
                        help="pipeline: also time decoding FILE alone and the fast pipeline from FILE")
    parser.add_argument("--decoder", default="opencv", metavar="LIST",
                        help=f"pipeline with --video: comma list of video decoders ({', '.join(DECODERS)}; "
                             "default: opencv)")


def run_bench(args: argparse.Namespace) -> int:
    """`alphapose-trt bench`: run, write bench.json and bench.md into --outdir, print the table."""
    opts = BenchOptions.from_args(args)
    report = run(opts)
    json_path, md_path = write_report(report, opts.outdir)
    print(render_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0
