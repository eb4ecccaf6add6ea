#!/usr/bin/env bash
# which references make the parent warn "Producer process has been terminated ..." at exit
set -u
export PYTHONPATH=$PWD/.nvc:$PWD
cat > /tmp/spec.json <<'J'
{"shape": [3, 4], "batch": 4, "frames": 32}
J
run() {  # $1: label, $2: extra python lines after the read loop
python3 - <<PY 2>&1 | grep -c "Producer process" | sed "s/^/$1: warnings /"
import sys, threading, gc, torch
sys.path.insert(0, "tests")
from alphapose_trt.io.decode_process import DecodeProcess, Stretch
from decode_fakes import FakeSession
process = DecodeProcess("clip.json", FakeSession, "/tmp/spec.json", [Stretch(0, 16), Stretch(16, 32)], 2, (3, 4), 4, torch.device("cuda"))
stop = threading.Event()
process.wait_ready(stop)
for j in range(2):
    for slot, frames in process.batches(j, stop):
        process.release(j, slot)
process.close(wait=True)
$2
PY
}
run "P0 fixed, view kept" ""
run "P1 fixed, view dropped" "del frames; gc.collect()"
run "P2 fixed, view dropped, ipc_collect" "del frames; gc.collect(); torch.cuda.ipc_collect()"
cp alphapose_trt/io/decode_process.py /tmp/fixed.py; cp .probe/decode_process_old.py alphapose_trt/io/decode_process.py
run "P3 old, view dropped" "del frames; gc.collect()"
run "P4 old, view dropped, process dropped" "del frames, process; gc.collect(); torch.cuda.ipc_collect()"
cp /tmp/fixed.py alphapose_trt/io/decode_process.py
python3 - <<'PY' 2>&1 | grep -E "Producer|frames" | sed "s/^/P5 fixed, NVDEC source: /"
import cv2, numpy as np, torch
from alphapose_trt.io.sources import open_source
w = cv2.VideoWriter("/tmp/c.mp4", cv2.VideoWriter_fourcc(*"mp4v"), 30, (320, 192))
for i in range(40):
    w.write(np.full((192, 320, 3), i * 5, np.uint8))
w.release()
with open_source(video="/tmp/c.mp4", decoder="nvdec", device="cuda") as source:
    n = sum(1 for _ in source)
from alphapose_trt.io import decode_process
decode_process.wait_closed()
print("frames", n)
PY
