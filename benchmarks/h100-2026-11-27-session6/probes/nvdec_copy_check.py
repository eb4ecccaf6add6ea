"""Session 6: what caps our NVDEC source near 470 frames/s when raw sessions decode 1,100-1,700?

    python3 nvdec_copy_check.py CLIP [CLIP ...] [--sessions 1,3] [--seconds 4]

Each case runs in a fresh interpreter (no OpenCV, no pipeline): raw decoder sessions looping over
CLIP on threads of their own, each with its own CUDA stream, doing per batch of 8 frames
  raw     get_batch_frames only
  dlpack  + torch.from_dlpack of each frame (no copy)
  stack   + torch.stack of them (one copy) and a stream synchronize, as io/nvdec.py does
  nosync  + torch.stack without the synchronize (unsafe: shows what the wait costs)
"""
import argparse
import subprocess
import sys

_LOOP = """
import sys, threading, time
import PyNvVideoCodec as nvc
import torch
path, sessions, seconds, case = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
count, stop = [0], time.perf_counter() + seconds
def loop():
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        while time.perf_counter() < stop:
            decoder = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, cuda_stream=stream.cuda_stream,
                                        output_color_type=nvc.OutputColorType.NATIVE)
            while time.perf_counter() < stop and (frames := decoder.get_batch_frames(8)):
                if case != "raw":
                    views = [torch.from_dlpack(f) for f in frames]
                    if case in ("stack", "nosync"):
                        torch.stack(views)
                    if case == "stack":
                        stream.synchronize()
                count[0] += len(frames)
torch.zeros(1, device="cuda")
start = time.perf_counter()
threads = [threading.Thread(target=loop) for _ in range(sessions)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"{count[0] / (time.perf_counter() - start):.1f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--sessions", default="1,3")
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    for clip in args.clips:
        for sessions in [int(s) for s in args.sessions.split(",")]:
            for case in ("raw", "dlpack", "stack", "nosync"):
                run = subprocess.run([sys.executable, "-c", _LOOP, clip, str(sessions), str(args.seconds), case],
                                     capture_output=True, text=True)
                rate = run.stdout.split()[-1] if run.returncode == 0 and run.stdout.split() else f"failed: {run.stderr[-300:]}"
                print(f"{clip.split('/')[-1]} {sessions} sessions, {case}: {rate} frames/s", flush=True)


if __name__ == "__main__":
    main()
