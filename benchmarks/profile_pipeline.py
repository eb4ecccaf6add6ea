"""Where the fast pipeline's time goes on a GPU: frames/s and host time per stage (waits included)
for each stage lag, then the top CUDA and CPU ops of a few batches.

    python3 benchmarks/profile_pipeline.py [--backend compiled|eager+graphs] [--frames 128] [--lags 1,2] [--video F]

Synthetic weights from the bench cache; 1080p frames in memory, 8 persons per frame, 8 frames per
call, `process_stream` as `infer` runs it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import resource
import sys
import threading
import time
import types
from pathlib import Path

import torch

from alphapose_trt.api import batched
from alphapose_trt.bench import BenchOptions, decode_fps, load_models, make_frames
from alphapose_trt.io.sources import open_source
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.pipeline import runner, transfer
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline

STAGES = ("_stage", "_launch_detect", "_launch_pose", "_boxes", "_estimate", "_finish")


PIN_PIPELINE_THREAD = False  # --video-variants pin


def pin_this_thread(undo: bool = False) -> None:
    """The calling (pipeline) thread alone on CPU 0 and its hyperthread siblings, every other
    thread of the process on the remaining CPUs (undo: all threads on all CPUs again). Tests
    whether the pipeline thread's slowdown next to the decoder is sharing cores or not."""
    everything = os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
    siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text().strip()
    mine = set()
    for part in siblings.split(","):
        lo, _, hi = part.partition("-")
        mine |= set(range(int(lo), int(hi or lo) + 1))
    me = threading.get_native_id()
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread may end meanwhile
            os.sched_setaffinity(int(task), everything if undo else (mine if int(task) == me else everything - mine))


def video_fps(pipe: PosePipeline, path: Path, limit: int) -> tuple[float, float, str]:
    """Frames/s of the pipeline reading `path`, the share of that time the pipeline's thread
    waited for decoded frames (high: the reader is the bottleneck; low: the pipeline is), and
    where the host's time went: the pipeline thread's own CPU time against the wall time (a low
    share while not waiting for frames means it waited for the GIL or a lock), and the process's
    user/system CPU and page faults per frame (system time and faults: memory mapping churn)."""
    waited, count = 0.0, 0
    usage, thread_cpu = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
    with open_source(video=path) as source:
        reader = iter(source)

        def images():
            nonlocal waited
            for i in range(limit):
                t = time.perf_counter()
                frame = next(reader, None)
                waited += time.perf_counter() - t
                if frame is None:
                    return
                if i == 0 and PIN_PIPELINE_THREAD:  # every thread exists now (decoder, pools)
                    pin_this_thread()
                yield frame.image

        start = time.perf_counter()
        for _, results in pipe.process_stream((None, chunk, None) for chunk in batched(images(), 8)):
            count += len(results)
        total = time.perf_counter() - start
    if PIN_PIPELINE_THREAD:
        pin_this_thread(undo=True)
    thread_cpu = time.thread_time() - thread_cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    host = (f"pipeline thread on CPU {thread_cpu / total:.0%} of the wall time; per frame: process user "
            f"{(after.ru_utime - usage.ru_utime) / count * 1e3:.2f} ms, system {(after.ru_stime - usage.ru_stime) / count * 1e3:.2f} ms, "
            f"{(after.ru_minflt - usage.ru_minflt) / count:.0f} page faults")
    return count / total, waited / total, host


@contextlib.contextmanager
def video_settings(variant: str):
    """Apply one --video-variants entry for the duration of a video run (then restore)."""
    global PIN_PIPELINE_THREAD
    import cv2

    from alphapose_trt.io import sources

    threads, blocking, capture, convert = cv2.getNumThreads(), transfer.BLOCKING_WAIT, sources.cv2.VideoCapture, sources._to_rgb8
    for part in variant.split("+"):
        if part == "spin":
            transfer.BLOCKING_WAIT = False
        elif part == "cvdefault":
            cv2.setNumThreads(-1)
        elif part.startswith("ff"):
            n = int(part[2:])
            sources.cv2 = types.SimpleNamespace(**{k: getattr(cv2, k) for k in dir(cv2) if not k.startswith("__")})
            sources.cv2.VideoCapture = lambda target: capture(target, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, n])
        elif part == "pin":
            PIN_PIPELINE_THREAD = True
        elif part == "noconvert":  # frames stay BGR: what skipping the colour conversion would gain
            sources._to_rgb8 = lambda decoded, path: decoded
        elif part != "base":
            raise SystemExit(f"unknown video variant {part!r}")
    try:
        yield
    finally:
        PIN_PIPELINE_THREAD = False
        transfer.BLOCKING_WAIT = blocking
        cv2.setNumThreads(threads)
        sources.cv2, sources._to_rgb8 = cv2, convert


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="compiled")
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--lags", default="1,2")
    ap.add_argument("--video", default=None, help="also time the pipeline reading this file")
    ap.add_argument("--video-variants", default="base",
                    help="host settings to try for the video run, '+'-joined within one: base (the pipeline's), spin "
                         "(HostCopy waits spin, CUDA's default), cvdefault (OpenCV's own thread count), ffN (N FFmpeg threads), noconvert (skip BGR->RGB), pin (pipeline thread alone on CPU 0)")
    ap.add_argument("--threads", type=int, default=None, help="then torch.set_num_threads(N) and rerun the last lag")
    ap.add_argument("--cv-threads", type=int, default=None, help="then cv2.setNumThreads(N) and rerun the last lag")
    ap.add_argument("--switch", default=None, help="then each sys.setswitchinterval value (s) with the last lag")
    args = ap.parse_args()
    from alphapose_trt.cli import build_parser

    bench_args = build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"])
    opts = BenchOptions.from_args(bench_args)
    models, _ = load_models(opts, ("detector", "pose"))
    if args.backend == "compiled":
        det = CompiledEngine(models["detector"], "cuda", "fp16", max_batch=8, mode="reduce-overhead", batch_sizes=(8,))
        pose = CompiledEngine(models["pose"], "cuda", "fp16", max_batch=64, mode="reduce-overhead", batch_sizes=(8, 64))
    else:
        det = EagerEngine(models["detector"], "cuda", "fp16", max_batch=8, cuda_graphs=True)
        pose = EagerEngine(models["pose"], "cuda", "fp16", max_batch=64, cuda_graphs=True)
    pipe = PosePipeline(det, pose, "cuda", PipelineConfig(max_persons=8, det_batch=8, pose_batch=64))
    frames = make_frames(args.frames, (1920, 1080), 0)
    chunks = [frames[i : i + 8] for i in range(0, len(frames), 8)]
    host = collections.Counter()

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                host[name] += time.perf_counter() - t
        return wrapper

    for name in STAGES:
        setattr(pipe, name, timed(name, getattr(pipe, name)))
    transfer.HostCopy.wait = timed("  wait: HostCopy", transfer.HostCopy.wait)
    transfer.StagedFrames.send = timed("  send (waits copies)", transfer.StagedFrames.send)

    def run() -> float:
        start = time.perf_counter()
        for _ in pipe.process_stream((None, c, None) for c in chunks):
            pass
        return time.perf_counter() - start

    lags = [(int(x), None, None) for x in args.lags.split(",")]
    if args.threads is not None:
        lags.append((lags[-1][0], args.threads, None))
    if args.cv_threads is not None:
        lags.append((lags[-1][0], args.threads, args.cv_threads))
    switches = [None] * len(lags)
    for value in (args.switch.split(",") if args.switch else []):
        lags.append(lags[-1])
        switches.append(float(value))
    for (lag, threads, cv_threads), switch in zip(lags, switches):
        if switch is not None:
            sys.setswitchinterval(switch)
        runner.STAGE_LAG = lag
        if threads is not None:
            torch.set_num_threads(threads)
        if cv_threads is not None:
            import cv2

            cv2.setNumThreads(cv_threads)
        run()
        torch.cuda.synchronize()
        host.clear()
        total = run()
        print(f"{args.backend}, stage lag {lag}, {torch.get_num_threads()} torch threads, cv2 threads {cv_threads or 'default'}, switch {sys.getswitchinterval() * 1e3:.2f} ms: {len(frames) / total:.1f} frames/s; host ms per batch of 8 (of {total / len(chunks) * 1e3:.1f}):")
        for name, sec in sorted(host.items(), key=lambda kv: -kv[1]):
            print(f"  {name:22s} {sec / len(chunks) * 1e3:6.2f}")
        for variant in (args.video_variants.split(",") if args.video else []):
            with video_settings(variant):
                fps, starved, host_use = video_fps(pipe, Path(args.video), len(frames))
                alone = decode_fps(Path(args.video), len(frames))
            print(f"  [{variant}] from {args.video}: {fps:.1f} frames/s, {starved:.0%} of it waiting for frames "
                  f"(decoding alone {alone:.1f}); {host_use}")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in pipe.process_stream((None, c, None) for c in chunks[:6]):
            pass
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))


if __name__ == "__main__":
    main()
