"""Where the compiled pipeline reading an mp4 through the NVDEC decoding-process source waits.

    PYTHONPATH=.:PYNVVIDEOCODEC python3 benchmarks/nvdec_pipeline_timing.py CLIP [--frames 256] [--rounds 2]

Per run: frames/s; the reader thread's time waiting for the decoding process's batches,
converting them and synchronizing its stream; the pipeline thread's time waiting for frames.
Then the in-memory pipeline alone and beside a source reading the same file in a loop.
"""
import argparse
import threading
import time
from itertools import islice
from pathlib import Path

import torch

from alphapose_trt.api import batched
from alphapose_trt.bench import make_frames, time_pipeline
from alphapose_trt.io import decode_process, nvdec
from alphapose_trt.io.sources import open_source
from probe_setup import compiled_pipeline  # benchmarks/, the script's folder

spent = {"batches": 0.0, "convert": 0.0, "sync": 0.0}


def instrument() -> None:
    batches, convert, sync = decode_process.DecodeProcess.batches, nvdec.nv12_to_rgb_fused, torch.cuda.Stream.synchronize

    def timed_batches(self, j, stop):
        it = batches(self, j, stop)
        while True:
            t = time.perf_counter()
            got = next(it, None)
            spent["batches"] += time.perf_counter() - t
            if got is None:
                return
            yield got

    def timed(name, fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if threading.current_thread().name.startswith("reader"):
                    spent[name] += time.perf_counter() - t
        return run

    decode_process.DecodeProcess.batches = timed_batches
    nvdec.nv12_to_rgb_fused = timed("convert", convert)
    torch.cuda.Stream.synchronize = timed("sync", sync)


def from_video(pipe, clip: Path, frames: int) -> str:
    decode_process.wait_closed()
    waited = 0.0
    with open_source(video=clip, decoder="nvdec", device="cuda") as source:
        source.warm_up()
        for key in spent:
            spent[key] = 0.0
        reader = iter(source)

        def images():
            nonlocal waited
            for _ in range(frames):
                t = time.perf_counter()
                frame = next(reader, None)
                waited += time.perf_counter() - t
                if frame is None:
                    return
                yield frame.image

        start, count = time.perf_counter(), 0
        for _, results in pipe.process_stream((None, chunk, None) for chunk in batched(images(), 8)):
            count += len(results)
        total = time.perf_counter() - start
    return (f"{count / total:.1f} frames/s from the file; reader ms: waiting for batches {spent['batches'] * 1e3:.0f}, "
            f"converting {spent['convert'] * 1e3:.0f}, synchronizing {spent['sync'] * 1e3:.0f}; pipeline thread waiting "
            f"for frames {waited * 1e3:.0f} ms of {total * 1e3:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    instrument()
    pipe = compiled_pipeline()
    frames = make_frames(256, (1920, 1080), 0)
    row = time_pipeline(pipe, frames, 8, 10, torch.device("cuda"))
    print(f"in memory: {row.fps:.1f} frames/s", flush=True)
    from_video(pipe, args.clip, args.frames)  # warm: the first NVDEC source of a process builds its conversion
    for r in range(args.rounds):
        print(f"round {r}: {from_video(pipe, args.clip, args.frames)}", flush=True)
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                with open_source(video=args.clip, decoder="nvdec", device="cuda") as source:
                    source.warm_up()
                    for _ in islice(source, args.frames):
                        if stop.is_set():
                            break
        looping = threading.Thread(target=loop, daemon=True)
        looping.start()
        time.sleep(6)  # its decoding process started
        row = time_pipeline(pipe, frames, 8, 2, torch.device("cuda"))
        stop.set()
        looping.join()
        print(f"round {r}: in memory beside a looping NVDEC source: {row.fps:.1f} frames/s", flush=True)


if __name__ == "__main__":
    main()
