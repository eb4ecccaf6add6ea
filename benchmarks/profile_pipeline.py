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
import gc
import subprocess
import os
import re
import resource
import sys
import threading
import time
import types
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import torch

from alphapose_trt.api import batched
from alphapose_trt.bench import BenchOptions, decode_fps, load_models, make_frames, source_fps
from alphapose_trt.io.sources import open_source
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.pipeline import runner, transfer
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline

STAGES = ("_stage", "_launch_detect", "_launch_pose", "_boxes", "_estimate", "_finish")


PIN_PIPELINE_THREAD = False  # --video-variants pin
# host seconds (wall, and the pipeline thread's CPU) per instrumented stage, since the last clear
STAGE_WALL: collections.Counter = collections.Counter()
STAGE_CPU: collections.Counter = collections.Counter()


def stage_table(batches: int) -> str:
    return "\n".join(f"  {name:22s} {sec / batches * 1e3:6.2f} {STAGE_CPU[name] / batches * 1e3:6.2f}"
                     for name, sec in sorted(STAGE_WALL.items(), key=lambda kv: -kv[1]))


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


def thread_counters() -> dict[str, float]:
    """The calling thread's user and system CPU seconds and its voluntary / involuntary context
    switches (Linux /proc): a thread slowed by sharing its core shows involuntary switches;
    one slowed by unmapping freed frames shows system time."""
    fields = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path("/proc/thread-self/status").read_text().splitlines() if ":" in line)
    return {"user": int(fields[11]) / tick, "system": int(fields[12]) / tick,
            "voluntary": int(status["voluntary_ctxt_switches"]), "involuntary": int(status["nonvoluntary_ctxt_switches"])}


class ThreadCpu:
    """CPU seconds of every thread of this process between `start()` and `report()`, grouped by
    thread name (Python's name where the thread is Python's, else the OS one; numbers dropped),
    and the machine's steal time: which threads burn the host's CPU per frame."""

    def __init__(self) -> None:
        self.start()

    @staticmethod
    def _snapshot() -> dict[int, tuple[str, float]]:
        tick, names = os.sysconf("SC_CLK_TCK"), {t.native_id: t.name for t in threading.enumerate()}
        out = {}
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                comm, rest = Path(f"/proc/self/task/{task}/stat").read_text().split("(", 1)[1].rsplit(")", 1)
                fields = rest.split()
                name = re.sub(r"[-_:]?\d+$", "", names.get(int(task), comm))
                name = "convert" if name.endswith(":convert") else name.split(":")[0]  # reader:<file>[:convert]
                out[int(task)] = (name, (int(fields[11]) + int(fields[12])) / tick)
        return out

    @staticmethod
    def _steal() -> float:
        return int(Path("/proc/stat").read_text().split()[8]) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self.before, self.steal = self._snapshot(), self._steal()

    def report(self, frames: int, top: int = 7) -> str:
        groups: collections.Counter = collections.Counter()
        for tid, (name, cpu) in self._snapshot().items():
            groups[name] += cpu - self.before.get(tid, (name, 0.0))[1]
        parts = [f"{name} {cpu / frames * 1e3:.2f}" for name, cpu in groups.most_common(top) if cpu > 0]
        return f"CPU ms per frame by thread: {', '.join(parts)}; steal {(self._steal() - self.steal) / frames * 1e3:.2f}"


def video_fps(pipe: PosePipeline, path: Path, limit: int, decoder: str = "opencv") -> tuple[float, float, str]:
    """Frames/s of the pipeline reading `path`, the share of that time the pipeline's thread
    waited for decoded frames (high: the reader is the bottleneck; low: the pipeline is), and
    where the host's time went: the pipeline thread's own CPU time against the wall time (a low
    share while not waiting for frames means it waited for the GIL or a lock), and the process's
    user/system CPU and page faults per frame (system time and faults: memory mapping churn)."""
    waited, count = 0.0, 0
    STAGE_WALL.clear()
    STAGE_CPU.clear()
    usage, thread_cpu, counters = resource.getrusage(resource.RUSAGE_SELF), time.thread_time(), thread_counters()
    threads, collections_before = ThreadCpu(), [g["collections"] for g in gc.get_stats()]
    with open_source(video=path, decoder=decoder, device="cuda") as source:
        source.warm_up()  # as `infer` does: a GPU source's one-off start-up stays out of the timing
        reader = iter(source)

        def images():
            nonlocal waited
            for i in range(limit):
                t, c = time.perf_counter(), time.thread_time()
                frame = next(reader, None)
                waited += time.perf_counter() - t
                STAGE_WALL["next frame"] += time.perf_counter() - t
                STAGE_CPU["next frame"] += time.thread_time() - c
                if frame is None:
                    return
                if i == 0 and PIN_PIPELINE_THREAD:  # every thread exists now (decoder, pools)
                    pin_this_thread()
                yield frame.image

        start = time.perf_counter()
        for _, results in pipe.process_stream((None, chunk, None) for chunk in batched(images(), 8)):
            count += len(results)
        total = time.perf_counter() - start
        by_thread = threads.report(count)  # before the source closes: its threads end with it
    if PIN_PIPELINE_THREAD:
        pin_this_thread(undo=True)
    thread_cpu = time.thread_time() - thread_cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    mine = {k: v - counters[k] for k, v in thread_counters().items()}
    host = (f"pipeline thread on CPU {thread_cpu / total:.0%} of the wall time (per frame user {mine['user'] / count * 1e3:.2f} ms, "
            f"system {mine['system'] / count * 1e3:.2f} ms, {mine['voluntary'] / count:.1f} voluntary and "
            f"{mine['involuntary'] / count:.1f} involuntary switches); per frame: process user "
            f"{(after.ru_utime - usage.ru_utime) / count * 1e3:.2f} ms, system {(after.ru_stime - usage.ru_stime) / count * 1e3:.2f} ms, "
            f"{(after.ru_minflt - usage.ru_minflt) / count:.0f} page faults; garbage collections per generation "
            f"{[g['collections'] - b for g, b in zip(gc.get_stats(), collections_before)]}\n      {by_thread}\n"
            f"    host ms per batch of 8, wall / thread CPU:\n{stage_table(-(-count // 8))}")
    return count / total, waited / total, host


class InlineExecutor(Executor):
    """Runs each task at submit time, on the submitting thread (--video-variants inline)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def submit(self, fn, /, *args, **kwargs) -> Future:
        done: Future = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            done.set_exception(exc)
        return done


def stall_report(pipe: PosePipeline, chunks: list, runs: int = 2) -> None:
    """Batches of an in-memory stream that took over twice the median, and what happened in them:
    garbage collections (generation, ms) and pinned host allocations slower than 1 ms. Why: the
    bench's whole-run rate loses 3-10 % to one or two such batches, in the same place every run."""
    events: list[tuple[int, str]] = []
    batch = 0

    class TimedTorch:  # torch as transfer.py sees it, with pinned allocations timed
        def __getattr__(self, name):
            return getattr(torch, name)

        def empty(self, *args, **kwargs):
            start = time.perf_counter()
            out = torch.empty(*args, **kwargs)
            ms = (time.perf_counter() - start) * 1e3
            if kwargs.get("pin_memory") and ms > 1.0:
                events.append((batch, f"pinned {out.numel() * out.element_size() >> 20} MiB in {ms:.1f} ms"))
            return out

    gc_start: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start.append(time.perf_counter())
        elif gc_start:
            events.append((batch, f"gc gen{info['generation']} {(time.perf_counter() - gc_start.pop()) * 1e3:.1f} ms"))

    transfer.torch = TimedTorch()
    gc.callbacks.append(on_gc)
    try:
        for run_index in range(runs):
            events.clear()
            times, start = [], time.perf_counter()
            for batch, _ in enumerate(pipe.process_stream((None, c, None) for c in chunks)):
                now = time.perf_counter()
                times.append((now - start) * 1e3)
                start = now
                batch += 1  # events from here on happen while the next batch is made
            median = sorted(times)[len(times) // 2]
            slow = [f"#{i} {ms:.1f} ms" for i, ms in enumerate(times) if ms > 2 * median]
            print(f"  stalls, run {run_index + 1}: median batch {median:.2f} ms; slow: {', '.join(slow) or 'none'}; "
                  f"events: {', '.join(f'#{i} {what}' for i, what in events) or 'none'}")
    finally:
        transfer.torch = torch
        gc.callbacks.remove(on_gc)


@contextlib.contextmanager
def background_decoder(video: Path, where: str):
    """Decode `video` over and over while the block runs, in a child process ("process": only
    cores, caches and memory bandwidth are shared) or a thread of this one ("thread": the GIL,
    the allocator and the garbage collector too). Tells hardware contention apart from the
    interplay of threads in one interpreter when the pipeline slows down next to a decoder."""
    loop = (f"import cv2\ncv2.setNumThreads(1)\nwhile True:\n    c = cv2.VideoCapture({str(video)!r})\n"
            "    while c.read()[0]:\n        pass\n")
    if where == "process":
        child = subprocess.Popen([sys.executable, "-c", loop])
        time.sleep(1.0)  # let it start decoding
        try:
            yield
        finally:
            child.kill()
            child.wait()
        return
    import cv2

    stop = threading.Event()

    def decode() -> None:
        while not stop.is_set():
            capture = cv2.VideoCapture(str(video))
            while not stop.is_set() and capture.read()[0]:
                pass
            capture.release()

    worker = threading.Thread(target=decode, name="background-decoder", daemon=True)
    worker.start()
    time.sleep(0.5)
    try:
        yield
    finally:
        stop.set()
        worker.join()


@contextlib.contextmanager
def video_settings(variant: str, pipe: PosePipeline):
    """Apply one --video-variants entry for the duration of a video run (then restore)."""
    global PIN_PIPELINE_THREAD
    import cv2

    from alphapose_trt.io import sources

    threads, blocking, capture, convert = cv2.getNumThreads(), transfer.BLOCKING_WAIT, sources.cv2.VideoCapture, sources._to_rgb8
    converters, copier, switch = sources.CONVERT_WORKERS, pipe.upload._copier, sys.getswitchinterval()
    for part in variant.split("+"):
        if part == "spin":
            transfer.BLOCKING_WAIT = False
        elif part == "cvdefault":
            cv2.setNumThreads(-1)
        elif part.startswith("ff"):
            n = int(part[2:])
            sources.cv2 = types.SimpleNamespace(**{k: getattr(cv2, k) for k in dir(cv2) if not k.startswith("__")})
            sources.cv2.VideoCapture = lambda target: capture(target, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, n])
        elif part.startswith("up"):  # N threads copying frames into pinned memory
            pipe.upload._copier = ThreadPoolExecutor(int(part[2:]), thread_name_prefix="upload")
        elif part.startswith("conv"):  # N threads converting decoded frames to RGB
            sources.CONVERT_WORKERS = int(part[4:])
        elif part == "pin":
            PIN_PIPELINE_THREAD = True
        elif part.startswith("sw"):  # GIL switch interval of N microseconds
            sys.setswitchinterval(int(part[2:]) * 1e-6)
        elif part == "inline":  # RGB conversion on the reader thread (no pool)
            sources.ThreadPoolExecutor = InlineExecutor
        elif part == "nogc":  # no garbage collection during the run
            gc.disable()
        elif part == "noconvert":  # frames stay BGR: what skipping the colour conversion would gain
            sources._to_rgb8 = lambda decoded, path: decoded
        elif part != "base":
            raise SystemExit(f"unknown video variant {part!r}")
    try:
        yield
    finally:
        PIN_PIPELINE_THREAD = False
        gc.enable()
        sys.setswitchinterval(switch)
        transfer.BLOCKING_WAIT = blocking
        cv2.setNumThreads(threads)
        sources.cv2, sources._to_rgb8, sources.CONVERT_WORKERS = cv2, convert, converters
        sources.ThreadPoolExecutor = ThreadPoolExecutor
        if pipe.upload._copier is not copier:
            pipe.upload._copier.shutdown()
            pipe.upload._copier = copier


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="compiled")
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--lags", default="1,2")
    ap.add_argument("--video", default=None, help="also time the pipeline reading this file")
    ap.add_argument("--decoder", default="opencv", help="the video source: opencv, pyav or nvdec")
    ap.add_argument("--video-variants", default="base",
                    help="host settings to try for the video run, '+'-joined within one: base (the pipeline's), spin "
                         "(HostCopy waits spin, CUDA's default), cvdefault (OpenCV's own thread count), ffN (N FFmpeg threads), upN (N frame "
                         "copy threads), convN (N RGB conversion threads), noconvert (skip BGR->RGB), pin (pipeline thread alone on CPU 0), inline (RGB conversion on the reader thread), nogc (no garbage collection), swN (GIL switch interval N us)")
    ap.add_argument("--threads", type=int, default=None, help="then torch.set_num_threads(N) and rerun the last lag")
    ap.add_argument("--cv-threads", type=int, default=None, help="then cv2.setNumThreads(N) and rerun the last lag")
    ap.add_argument("--contention", action="store_true",
                    help="then the in-memory run again beside a decoder looping over --video in a process, then a thread")
    ap.add_argument("--stalls", action="store_true", help="then report batches over twice the median, with GCs and slow pinned allocations")
    ap.add_argument("--cprofile", type=int, default=0, help="then print the N functions with most own time in one in-memory run")
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
    host, cpu = STAGE_WALL, STAGE_CPU

    def timed(name, fn):
        def wrapper(*a, **k):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                host[name] += time.perf_counter() - t
                cpu[name] += time.thread_time() - c
        return wrapper

    if args.stalls:  # as the bench times it: a fresh pipeline, 10 warm-up batches, then the stream
        for _ in pipe.process_stream((None, chunks[i % len(chunks)], None) for i in range(10)):
            pass
        torch.cuda.synchronize()
        stall_report(pipe, chunks)
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
        cpu.clear()
        threads = ThreadCpu()
        total = run()
        print(f"in memory: {threads.report(len(frames))}")
        table = stage_table(len(chunks))
        print(f"{args.backend}, stage lag {lag}, {torch.get_num_threads()} torch threads, cv2 threads {cv_threads or 'default'}, switch {sys.getswitchinterval() * 1e3:.2f} ms: {len(frames) / total:.1f} frames/s; host ms per batch of 8 (of {total / len(chunks) * 1e3:.1f}), wall / thread CPU:\n{table}")
        for where in (("process", "thread") if args.video and args.contention else ()):
            with background_decoder(Path(args.video), where):
                threads, busy = ThreadCpu(), time.thread_time()
                total = run()
                busy, by_thread = time.thread_time() - busy, threads.report(len(frames))
            print(f"  in memory, a decoder looping in a {where} beside it: {len(frames) / total:.1f} frames/s, pipeline "
                  f"thread on CPU {busy / total:.0%}, {busy / len(frames) * 1e3:.2f} ms per frame; {by_thread}")
        for variant in (args.video_variants.split(",") if args.video else []):
            with video_settings(variant, pipe):
                fps, starved, host_use = video_fps(pipe, Path(args.video), len(frames), args.decoder)
                source_alone = source_fps(Path(args.video), len(frames), args.decoder, torch.device("cuda"))
                usage = resource.getrusage(resource.RUSAGE_SELF)
                alone = decode_fps(Path(args.video), len(frames), args.decoder, torch.device("cuda"))
                after = resource.getrusage(resource.RUSAGE_SELF)
                alone_cpu = (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) / len(frames) * 1e3
            print(f"  [{variant}] from {args.video}: {fps:.1f} frames/s, {starved:.0%} of it waiting for frames "
                  f"(decoding alone {alone:.1f}, the source alone {source_alone:.1f}); {host_use}\n      decoding alone: process CPU {alone_cpu:.2f} ms per frame")
    if args.cprofile:  # the pipeline thread's Python functions, by own time (cProfile slows it ~2x)
        import cProfile
        import pstats

        with cProfile.Profile() as prof:
            run()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.cprofile)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in pipe.process_stream((None, c, None) for c in chunks[:6]):
            pass
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))


if __name__ == "__main__":
    main()
