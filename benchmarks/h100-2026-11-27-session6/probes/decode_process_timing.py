"""Session 6: where the decoding process (io/decode_process.py) spends its time with NVDEC.

    PYTHONPATH=.:PYNVVIDEOCODEC:THIS_FOLDER python3 decode_process_timing.py CLIP [--sessions 1,3]

Per session count: the parent reads every stretch of CLIP through `DecodeProcess` with NVDEC
sessions, (a) releasing each slot at once, (b) converting each batch to RGB first (as the
source does). The child's sessions report, per stretch, the time spent inside the decoder
(get_batch_frames) and outside it (copy into the ring, synchronize, waiting for a free slot,
sending); the parent, the time spent waiting for batches and converting them.
"""
import argparse
import sys
import threading
import time

import torch

from alphapose_trt.io import nvdec
from alphapose_trt.io.decode_process import DecodeProcess
from alphapose_trt.io.sources import open_source


class TimedSession(nvdec.NvdecSession):
    def batches(self, start, end, read_on):
        inside = outside = 0.0
        count = 0
        it = super().batches(start, end, read_on)
        t = time.perf_counter()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            u = time.perf_counter()
            inside += u - t
            yield batch
            count += len(batch)
            t = time.perf_counter()
            outside += t - u
        print(f"    child stretch [{start}:{end}] {count} frames: decoder {inside * 1e3:.0f} ms, "
              f"copy/sync/slot/send {outside * 1e3:.0f} ms", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--sessions", default="1,3")
    args = ap.parse_args()
    import decode_process_timing as by_name  # the child imports the session class by module name, not __main__
    for sessions in map(int, args.sessions.split(",")):
        nvdec.NVDEC_SESSIONS = sessions
        with open_source(video=args.clip, decoder="nvdec", device="cuda") as source:
            stretches, size = source.stretches, source.size
        for convert in (False, True):
            w, h = size
            begin = time.perf_counter()
            process = DecodeProcess("probe", by_name.TimedSession, args.clip, stretches, sessions, (h * 3 // 2, w), 8,
                                    torch.device("cuda"))
            process.wait_ready()
            started = time.perf_counter() - begin
            stop, frames, waiting, converting = threading.Event(), 0, 0.0, 0.0
            stream = torch.cuda.Stream()
            begin = time.perf_counter()
            for j in range(len(stretches)):
                it = process.batches(j, stop)
                while True:
                    t = time.perf_counter()
                    got = next(it, None)
                    u = time.perf_counter()
                    waiting += u - t
                    if got is None:
                        break
                    slot, nv12 = got
                    if convert:
                        with torch.cuda.stream(stream):
                            nvdec._nv12_to_rgb_fused(nv12)
                        stream.synchronize()
                    converting += time.perf_counter() - u
                    process.release(j, slot)
                    frames += len(nv12)
            total = time.perf_counter() - begin
            process.close()
            print(f"x{sessions} convert={convert}: start-up {started:.2f} s; {frames} frames in {total * 1e3:.0f} ms = "
                  f"{frames / total:.1f} frames/s; parent waiting {waiting * 1e3:.0f} ms, converting {converting * 1e3:.0f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
