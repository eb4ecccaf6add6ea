"""Does importing OpenCV cap NVDEC decoding in the same process?

    python3 benchmarks/nvdec_cv2_check.py CLIP [--sessions 3] [--seconds 4]

Why: in session 5 every process in which several PyNvVideoCodec sessions together stayed near
470 frames/s had imported OpenCV (which bundles its own FFmpeg, as PyNvVideoCodec does), and the
two in which they scaled (1,051-1,758 frames/s) had not (benchmarks/README.md). Each case runs in
a fresh interpreter: the same raw decoder sessions looping over CLIP, with and without
`import cv2` first, and with cv2 imported after PyNvVideoCodec.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

_LOOP = """
import sys, threading, time
{imports}
import torch
path, sessions, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count, stop = [0], time.perf_counter() + seconds
def loop():
    stream = torch.cuda.Stream()
    while time.perf_counter() < stop:
        decoder = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, cuda_stream=stream.cuda_stream,
                                    output_color_type=nvc.OutputColorType.NATIVE)
        while time.perf_counter() < stop and (frames := decoder.get_batch_frames(8)):
            count[0] += len(frames)
start = time.perf_counter()
threads = [threading.Thread(target=loop) for _ in range(sessions)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"{{count[0] / (time.perf_counter() - start):.1f}}")
"""

CASES = {
    "without cv2": "import PyNvVideoCodec as nvc",
    "cv2 imported first": "import cv2\nimport PyNvVideoCodec as nvc",
    "cv2 imported after": "import PyNvVideoCodec as nvc\nimport cv2",
}


def raw_sessions_command(clip: str | Path, sessions: int, seconds: float, imports: str) -> list[str]:
    """A fresh interpreter's command line that loops `sessions` raw decoders over `clip` for
    `seconds` after `imports` (which bind `nvc`), and prints their frames/s together."""
    return [sys.executable, "-c", _LOOP.format(imports=imports), str(clip), str(sessions), str(seconds)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    for _ in range(2):
        for name, imports in CASES.items():
            run = subprocess.run(raw_sessions_command(args.clip, args.sessions, args.seconds, imports),
                                 capture_output=True, text=True)
            rate = run.stdout.split()[-1] if run.returncode == 0 and run.stdout.split() else f"failed: {run.stderr[-300:]}"
            print(f"{args.sessions} sessions, {name}: {rate} frames/s", flush=True)


if __name__ == "__main__":
    main()
