"""The bench's compiled pipeline for probe scripts, built in one place (fp16, reduce-overhead, 8
frames per call, 8 persons per frame, synthetic weights from the bench cache)."""

from __future__ import annotations

from alphapose_trt.bench import BenchOptions, load_models
from alphapose_trt.cli import build_parser
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
