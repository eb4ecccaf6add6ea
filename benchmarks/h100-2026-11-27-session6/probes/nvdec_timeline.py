"""Session 6: where our NVDEC source (io/nvdec.py) spends its time, as a timeline.

    PYTHONPATH=.:PYNVVIDEOCODEC python3 nvdec_timeline.py CLIP [CLIP ...] [--sessions 1,3] [--frames 256]

Per clip and session count, twice (the second pass has the conversion compiled): the
constructor (open + scan), each session's open, each stretch's decode (start-end, ms from the
start), the first frame out and the total, as `bench.source_fps` reads the source.
"""
import argparse
import time
from pathlib import Path

import torch

from alphapose_trt.io import nvdec
from alphapose_trt.io.sources import open_source

events: list[str] = []
t0 = [0.0]


def ms() -> str:
    return f"{(time.perf_counter() - t0[0]) * 1e3:.0f}"


def instrument() -> None:
    open_, decode = nvdec.NvdecVideoSource._open, nvdec.NvdecVideoSource._decode

    def timed_open(self, scan=False, stream=None):
        begin = ms()
        out = open_(self, scan, stream)
        events.append(f"open{' scan' if scan else ''} {begin}-{ms()}")
        return out

    def timed_decode(self, session, start, end, read_on):
        begin = ms()
        out = decode(self, session, start, end, read_on)
        events.append(f"decode[{start}:{end}] {begin}-{ms()}")
        return out

    nvdec.NvdecVideoSource._open, nvdec.NvdecVideoSource._decode = timed_open, timed_decode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--sessions", default="1,3")
    ap.add_argument("--frames", type=int, default=256)
    args = ap.parse_args()
    instrument()
    for clip in args.clips:
        for sessions in [int(s) for s in args.sessions.split(",")]:
            nvdec.NVDEC_SESSIONS = sessions
            for run in range(2):
                events.clear()
                t0[0] = time.perf_counter()
                count, first = 0, None
                with open_source(video=clip, decoder="nvdec", device="cuda") as source:
                    events.append(f"constructed {ms()}")
                    for _ in zip(range(args.frames), source):
                        count += 1
                        first = first or ms()
                torch.cuda.synchronize()
                total = time.perf_counter() - t0[0]
                print(f"{clip.name} x{sessions} run {run}: {count} frames, {count / total:.1f} frames/s; first frame "
                      f"{first} ms; total {total * 1e3:.0f} ms; " + "; ".join(events), flush=True)


if __name__ == "__main__":
    main()
