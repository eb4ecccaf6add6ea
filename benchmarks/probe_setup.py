"""The bench's compiled pipeline for probe scripts, built in one place (fp16, reduce-overhead, 8
frames per call, 8 persons per frame, synthetic weights from the bench cache), and the A/B loop
that times pipeline variants alternately in one process."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from alphapose_trt.bench import BenchOptions, load_models, make_frames, time_pipeline, video_pipeline_fps
from alphapose_trt.cli import build_parser
from alphapose_trt.engines import compiled as compiled_module
from alphapose_trt.engines.base import Engine
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline

CONFIG = PipelineConfig(max_persons=8, det_batch=8, pose_batch=64)


def compiled_engines() -> tuple[Engine, Engine]:
    """The detector (batch 8) and pose (buckets 8, 64) engines the bench's pipeline runs."""
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
    models, _ = load_models(opts, ("detector", "pose"))
    det = CompiledEngine(models["detector"], "cuda", "fp16", max_batch=8, mode="reduce-overhead", batch_sizes=(8,))
    pose = CompiledEngine(models["pose"], "cuda", "fp16", max_batch=64, mode="reduce-overhead", batch_sizes=(8, 64))
    return det, pose


def compiled_pipeline() -> PosePipeline:
    return PosePipeline(*compiled_engines(), "cuda", CONFIG)


@contextlib.contextmanager
def unpadded(active: bool = True):
    """Compiled engines built meanwhile keep the models' own channel counts (engines/padding.py)."""
    original = compiled_module.prepare_module
    if active:
        compiled_module.prepare_module = lambda *args, **kwargs: original(*args, **{**kwargs, "pad_convs": False})
    try:
        yield
    finally:
        compiled_module.prepare_module = original


def ab_arguments(description: str) -> argparse.Namespace:
    """The A/B probes' options: rounds, frames, and optionally a video read with a decoder."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--video", type=Path, help="also time each pipeline reading this file, as the bench does")
    ap.add_argument("--decoder", default="pyav", help="the decoder for --video (opencv, pyav, nvdec)")
    return ap.parse_args()


def alternate(pipelines: dict[str, PosePipeline], args: argparse.Namespace) -> None:
    """Each pipeline in turn, `args.rounds` times, on the same 1080p frames in memory, timed as
    the bench times its pipeline row (`time_pipeline`: host time between consecutive batches);
    with `args.video`, each also reads that file (`video_pipeline_fps`, after the in-memory run)."""
    images = make_frames(args.frames, (1920, 1080), 0)
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for round_ in range(args.rounds):
        for name, pipeline in pipelines.items():
            row = time_pipeline(pipeline, images, CONFIG.det_batch, 8, torch.device("cuda"))
            line = (f"round {round_} {name}: {row.fps:7.1f} frames/s whole run, "
                    f"{row.median_fps:7.1f} median batch, {row.persons_per_frame:.2f} persons per frame")
            if args.video:
                fps = video_pipeline_fps(pipeline, args.video, args.frames, CONFIG.det_batch, args.decoder)
                line += f", {fps:7.1f} from {args.video.name} ({args.decoder})"
            print(line, flush=True)
