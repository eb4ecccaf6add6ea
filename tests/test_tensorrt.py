"""TensorRT engines, where TensorRT and a GPU exist (marker `gpu`).

TensorRT is not installed on our CI machine or on our test H100, so on those these tests skip
with that reason; the engine file container and the missing-TensorRT error are tested on the CPU
in test_engines.py.
"""

from __future__ import annotations

import pytest
import torch

from alphapose_trt.engines import export_engine, open_engine
from alphapose_trt.engines.eager import EagerEngine

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_dynamic_pose_engine_matches_eager_fp32(pose_model, tmp_path, precision, tol):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    path = tmp_path / f"pose-{precision}.engine"
    export_engine(pose_model, "tensorrt", path, (1, 4, 8), precision)
    engine = open_engine(path, kind="pose", device="cuda")
    reference = EagerEngine(pose_model, "cuda", "fp32", channels_last=False)
    for n in (1, 7, 9):  # 9 > max batch 8: split and re-joined
        x = torch.rand(n, 3, 256, 192, device="cuda")
        out, ref = engine(x).float(), reference(x)
        assert out.shape == ref.shape
        assert float((out - ref).norm() / ref.norm()) < tol
