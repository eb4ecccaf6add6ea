"""Session 6: our NVDEC source (decoding process + reader thread + conversion) alone, timed by part.

    PYTHONPATH=.:PYNVVIDEOCODEC python3 nvdec_source_timing.py CLIP [CLIP ...] [--sessions 1,3] [--frames 256]

Per clip and session count, twice: the start-up (open + warm_up), then `bench.source_fps`'s
read, with the reader thread's time waiting for the decoding process's batches and converting
them, and the consumer's time waiting for frames; then `bench.source_fps` itself, right after.
"""
import argparse
import time
from pathlib import Path

from alphapose_trt.bench import source_fps
from alphapose_trt.io import decode_process, nvdec
from alphapose_trt.io.sources import open_source

spent = {"batches": 0.0, "convert": 0.0}


def instrument() -> None:
    batches, convert = decode_process.DecodeProcess.batches, nvdec._nv12_to_rgb_fused

    def timed_batches(self, j, stop):
        it = batches(self, j, stop)
        while True:
            t = time.perf_counter()
            got = next(it, None)
            spent["batches"] += time.perf_counter() - t
            if got is None:
                return
            yield got

    def timed_convert(nv12):
        t = time.perf_counter()
        out = convert(nv12)
        spent["convert"] += time.perf_counter() - t
        return out

    decode_process.DecodeProcess.batches, nvdec._nv12_to_rgb_fused = timed_batches, timed_convert


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--sessions", default="1,3")
    ap.add_argument("--frames", type=int, default=256)
    args = ap.parse_args()
    instrument()
    for clip in args.clips:
        for sessions in map(int, args.sessions.split(",")):
            nvdec.NVDEC_SESSIONS = sessions
            for run in range(2):
                begin = time.perf_counter()
                with open_source(video=clip, decoder="nvdec", device="cuda") as source:
                    source.warm_up()
                    started = time.perf_counter() - begin
                    spent.update(batches=0.0, convert=0.0)
                    count, waiting, begin = 0, 0.0, time.perf_counter()
                    it = iter(source)
                    while count < args.frames:
                        t = time.perf_counter()
                        if next(it, None) is None:
                            break
                        waiting += time.perf_counter() - t
                        count += 1
                    total = time.perf_counter() - begin
                    it.close()
                print(f"{clip.name} x{sessions} run {run}: start-up {started:.2f} s; {count} frames "
                      f"{count / total:.1f} frames/s; reader waiting for batches {spent['batches'] * 1e3:.0f} ms, "
                      f"converting {spent['convert'] * 1e3:.0f} ms; consumer waiting {waiting * 1e3:.0f} ms "
                      f"of {total * 1e3:.0f}; bench.source_fps right after: "
                      f"{source_fps(clip, args.frames, 'nvdec'):.1f} frames/s", flush=True)


if __name__ == "__main__":
    main()
