"""Session 6: does PyNvVideoCodec's get_batch_frames hold the GIL while it decodes?

    PYTHONPATH=PYNVVIDEOCODEC python3 nvdec_gil_check.py CLIP [--seconds 3]

A pure-Python thread counts loop iterations for SECONDS, alone and beside 1 and 3 decoder
sessions looping over CLIP on threads of their own. If the decoder held the GIL while it works,
the counter would nearly stop beside it; if it released it, the counter keeps most of its rate
(one core is free for it either way on a 16-core host).
"""
import argparse
import threading
import time

import PyNvVideoCodec as nvc
import torch


def count_for(seconds: float) -> float:
    n, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        n += 1
    return n / seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    torch.zeros(1, device="cuda")
    print(f"counter alone: {count_for(args.seconds) / 1e6:.2f} M iterations/s", flush=True)
    for sessions in (1, 3):
        stop, frames, calls = threading.Event(), [0], [0.0]

        def loop() -> None:
            stream = torch.cuda.Stream()
            while not stop.is_set():
                decoder = nvc.SimpleDecoder(args.clip, gpu_id=0, use_device_memory=True, cuda_stream=stream.cuda_stream,
                                            output_color_type=nvc.OutputColorType.NATIVE)
                while not stop.is_set():
                    begin = time.perf_counter()
                    got = decoder.get_batch_frames(8)
                    calls[0] = max(calls[0], time.perf_counter() - begin)
                    if not got:
                        break
                    frames[0] += len(got)

        threads = [threading.Thread(target=loop) for _ in range(sessions)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        start_frames = frames[0]
        rate = count_for(args.seconds)
        decoded = (frames[0] - start_frames) / args.seconds
        stop.set()
        for t in threads:
            t.join()
        print(f"counter beside {sessions} sessions: {rate / 1e6:.2f} M iterations/s; decoding {decoded:.0f} frames/s; "
              f"longest get_batch_frames {calls[0] * 1e3:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
