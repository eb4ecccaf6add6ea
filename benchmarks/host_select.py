"""Host time of the pipeline's detector boxes (`detect.select`: NMS, un-letterbox, limits) for
a batch of 8 1080p frames, per number of candidates per frame, on the CPU.

    python3 benchmarks/host_select.py [ROWS ...]

Candidates are YOLO rows clustered around six people (tests/test_detect.py's generator), about
0.63 of ROWS per frame pass the confidence and class filter. One torch thread, as on a CUDA
pipeline; prints the best of 5 rounds of 10 batches. Host-only work on the pipeline's thread,
so a CPU timing is its measure. Run it on two commits to compare them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_detect import _random_raw  # noqa: E402  (the tests' generator of clustered rows)

from alphapose_trt.pipeline import detect  # noqa: E402

FRAMES = 8


def main() -> None:
    torch.set_num_threads(1)
    info = detect.LetterboxInfo.for_image((1080, 1920))
    rng = np.random.default_rng(0)
    for rows in map(int, sys.argv[1:] or (50, 100, 200, 300, 600)):
        raw = np.stack([_random_raw(rng, rows) for _ in range(FRAMES)])
        boxes, counts = detect.candidates(torch.from_numpy(raw))
        top = boxes[:, : int(counts.max())].contiguous()
        kept = [len(b) for b in detect.select(top, counts, info)]
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(10):
                detect.select(top, counts, info)
            best = min(best, (time.perf_counter() - start) / 10 * 1e3)
        print(f"{int(counts.float().mean()):4d} candidates per frame (max {int(counts.max()):4d}): "
              f"{best:6.2f} ms per batch of {FRAMES}, kept {sum(kept)}", flush=True)


if __name__ == "__main__":
    main()
