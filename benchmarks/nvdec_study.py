"""NVDEC beside the compiled pipeline: how many decoder sessions, and does decoding stall the GPU work?

    python3 benchmarks/nvdec_study.py CLIP [CLIP ...] [--frames 256] [--sessions 1,2,3,4]

Per clip and number of decoder sessions (`io.nvdec.NVDEC_SESSIONS`): our NVDEC source alone (the
bench's NVDEC decode-alone), the pipeline from that source, and the in-memory pipeline beside a
thread that loops the source, and beside raw decoder sessions looping in a child process (is it
the GPU or the shared interpreter that slows the pipeline down?). The OpenCV path once per
clip for comparison. Synthetic weights from the bench cache, compiled fp16, 8 frames per call.
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time
from pathlib import Path

import torch

from alphapose_trt.bench import decode_fps, make_frames, source_fps, time_pipeline, video_pipeline_fps
from alphapose_trt.io import nvdec, yuv
from alphapose_trt.io.sources import open_source
from alphapose_trt.pipeline.runner import PosePipeline
from nvdec_cv2_check import CASES, raw_sessions_command  # benchmarks/, the script's folder
from probe_setup import compiled_pipeline


def beside_looping_source(pipe: PosePipeline, frames: list, path: Path) -> tuple[float, float]:
    """In-memory pipeline frames/s while another thread loops the NVDEC source; and that source's rate."""
    stop, counted = threading.Event(), [0, 0.0]

    def loop() -> None:
        start = time.perf_counter()
        while not stop.is_set():
            with open_source(video=path, decoder="nvdec", device="cuda") as source:
                for _ in source:
                    counted[0] += 1
                    if stop.is_set():
                        break
        counted[1] = time.perf_counter() - start

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(0.3)
    row = time_pipeline(pipe, frames, 8, 4, pipe.device)
    stop.set()
    thread.join()
    return row.fps, counted[0] / counted[1]


def beside_child_decoder(pipe: PosePipeline, frames: list, path: Path, sessions: int) -> tuple[float, float]:
    """In-memory pipeline frames/s while a child process loops raw NVDEC sessions over `path`
    (no interpreter shared with the pipeline); and that child's frames/s."""
    child = subprocess.Popen(raw_sessions_command(path, sessions, 6.0, CASES["without cv2"]),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(2.5)  # the child's imports and first decoder
    fps = time_pipeline(pipe, frames, 8, 4, pipe.device).fps
    return fps, float(child.communicate()[0].split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--sessions", default="1,2,3,4")
    args = ap.parse_args()
    pipe = compiled_pipeline()
    frames = make_frames(args.frames, (1920, 1080), 0)
    nv12 = torch.randint(0, 256, (8, 1620, 1920), dtype=torch.uint8, device="cuda")
    for name, convert in (("eager", yuv.nv12_to_rgb), ("compiled", yuv.nv12_to_rgb_fused)):
        for _ in range(3):
            convert(nv12)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            convert(nv12)
        torch.cuda.synchronize()
        print(f"nv12_to_rgb {name}, 8 1080p frames: {(time.perf_counter() - start) / 20 * 1e3:.3f} ms")
    print(f"in memory: {time_pipeline(pipe, frames, 8, 10, pipe.device).fps:.1f} frames/s")
    for clip in args.clips:
        n = args.frames
        print(f"== {clip.name}")
        print(f"  opencv: decode alone {decode_fps(clip, n):.1f}, pipeline {video_pipeline_fps(pipe, clip, n, 8):.1f}, "
              f"decode alone {decode_fps(clip, n):.1f}")
        for sessions in map(int, args.sessions.split(",")):
            nvdec.NVDEC_SESSIONS = sessions
            with open_source(video=clip, decoder="nvdec", device="cuda") as source:
                stretches = len(source.stretches)
            alone = [source_fps(clip, n, "nvdec") for _ in range(2)]
            runs = [video_pipeline_fps(pipe, clip, n, 8, "nvdec") for _ in range(2)]
            beside, loop_fps = beside_looping_source(pipe, frames, clip)
            child, child_fps = beside_child_decoder(pipe, frames, clip, sessions)
            print(f"  nvdec x{sessions} ({stretches} stretches): source alone {alone[0]:.1f} / {alone[1]:.1f}, "
                  f"pipeline {runs[0]:.1f} / {runs[1]:.1f}; in memory beside a looping source {beside:.1f} "
                  f"(source {loop_fps:.1f}); beside raw sessions in a child process {child:.1f} (child {child_fps:.1f})")


if __name__ == "__main__":
    main()
