"""Session 6: why does `bench.source_fps` read the NVDEC source at ~200 frames/s when a plain loop
over the same source reads 600-860 (nvdec_source_timing_2.txt)?

    PYTHONPATH=.:PYNVVIDEOCODEC python3 nvdec_sync_check.py CLIP [--frames 256]

Alternating, twice each: `bench.source_fps` as is; `bench.source_fps` with torch.cuda.synchronize
made a no-op (the one call it makes that the plain loop does not); the plain loop over zip()."""
import argparse
import time
from pathlib import Path

import torch

from alphapose_trt.bench import source_fps
from alphapose_trt.io.sources import open_source


def plain(clip: Path, frames: int) -> float:
    with open_source(video=clip, decoder="nvdec", device="cuda") as source:
        source.warm_up()
        count, start = 0, time.perf_counter()
        for _ in zip(range(frames), source):
            count += 1
        return count / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=256)
    args = ap.parse_args()
    sync = torch.cuda.synchronize
    for _ in range(2):
        print(f"source_fps: {source_fps(args.clip, args.frames, 'nvdec'):.1f}", flush=True)
        torch.cuda.synchronize = lambda device=None: None
        print(f"source_fps, no synchronize: {source_fps(args.clip, args.frames, 'nvdec'):.1f}", flush=True)
        torch.cuda.synchronize = sync
        print(f"plain zip loop: {plain(args.clip, args.frames):.1f}", flush=True)


if __name__ == "__main__":
    main()
