#!/usr/bin/env bash
set -u
export PYTHONPATH=$PWD/.nvc:$PWD
python3 - <<'PY' 2>&1 | grep -v -E "INVALID INDEX|^$" | tail -30
import cv2, numpy as np, torch
from alphapose_trt.io.sources import open_source
w = cv2.VideoWriter("/tmp/c.mp4", cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
for i in range(96):
    w.write(np.roll(np.tile(np.arange(640, dtype=np.uint8)[None, :, None], (360, 1, 3)), 4 * i, axis=1))
w.release()
with open_source(video="/tmp/c.mp4", decoder="nvdec", device="cuda") as source:
    n = sum(1 for _ in source)
from alphapose_trt.io import decode_process
decode_process.wait_closed()
print("frames", n, "failures", source.failures)
PY
