"""Host time of the pipeline's stage 3 (pose NMS of a batch + Person objects), on the CPU.

    python3 benchmarks/host_pose_nms.py [PERSONS]

8 frames x PERSONS (default 8) persons of random poses, one torch thread (as on a CUDA pipeline); prints the
fastest and the median of 15 rounds of 200 batches. This is host-only work on the pipeline's
thread, the thread that limits reading video (benchmarks/README.md), so a CPU timing is its
measure.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from alphapose_trt.pipeline.pose_nms import pose_nms_frames
from alphapose_trt.pipeline.runner import _persons

FRAMES, PERSONS, JOINTS = 8, 8, 17


def main() -> None:
    torch.set_num_threads(1)
    persons = int(sys.argv[1]) if len(sys.argv) > 1 else PERSONS
    rng = np.random.default_rng(0)
    n = FRAMES * persons
    index = np.repeat(np.arange(FRAMES), persons)
    xy = rng.uniform(0, 1500, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(50, 300, (n, 2))], 1).astype(np.float32)
    box_scores = rng.uniform(0.2, 1, n).astype(np.float32)
    coords = (boxes[:, None, :2] + rng.uniform(0, 50, (n, JOINTS, 2))).astype(np.float32)
    scores = rng.uniform(0, 1, (n, JOINTS)).astype(np.float32)

    def stage3() -> None:
        for frame in pose_nms_frames(index, FRAMES, boxes, box_scores, coords, scores, 0.0):
            _persons(frame)

    for _ in range(50):
        stage3()
    rounds = []
    for _ in range(15):
        start = time.perf_counter()
        for _ in range(200):
            stage3()
        rounds.append((time.perf_counter() - start) / 200 * 1e3)
    rounds.sort()
    print(f"stage 3 host ms per batch of {FRAMES} frames x {persons} persons: "
          f"fastest {rounds[0]:.3f}, median {rounds[len(rounds) // 2]:.3f}")


if __name__ == "__main__":
    main()
