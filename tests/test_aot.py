"""AOTInductor packages on the CPU (torch 2.14 builds and loads them): each model against eager
fp32, static and dynamic batch, the child-process load probe and its failure message."""

from __future__ import annotations

import pytest
import torch

from alphapose_trt.engines import export_engine, open_engine, read_meta
from alphapose_trt.engines import aot
from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.models.load import load_detector
from alphapose_trt.models.synthetic import random_images

pytestmark = pytest.mark.slow


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@pytest.fixture(scope="module")
def small_detector(synthetic_weights):
    return load_detector(synthetic_weights["detector"], img_size=64)


@pytest.fixture(scope="module")
def packages(small_detector, pose_model, tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("aot")
    monkeypatch_module.setenv("ALPHAPOSE_TRT_HOME", str(out / "home"))
    det = out / "detector.pt2"
    pose = out / "pose.pt2"
    export_engine(small_detector, "aot", det, (2, 2, 2), "fp32", "cpu")
    export_engine(pose_model, "aot", pose, (1, 1, 3), "fp32", "cpu")
    return {"detector": det, "pose": pose}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_static_detector_package_matches_eager(packages, small_detector):
    # images like the synthetic weights' calibration ones: on uniform noise a few box sizes reach
    # ~1e8 px and the relative error would measure little else
    x = random_images(torch.Generator().manual_seed(0), 3, 64, 64)
    engine = open_engine(packages["detector"], kind="detector")
    assert engine.meta.format == "aot" and engine.batch_sizes == (2,)
    out, ref = engine(x), EagerEngine(small_detector, "cpu", "fp32")(x)
    assert out.shape == ref.shape == (3, *ref.shape[1:])  # 2 + (1 padded to 2), trimmed
    assert torch.isfinite(ref).all()
    assert rel_err(out, ref) < 1e-4


def test_dynamic_pose_package_matches_eager(packages, pose_model):
    engine = open_engine(packages["pose"], kind="pose")
    assert engine.meta.dynamic and engine.meta.batch == (1, 1, 3)
    reference = EagerEngine(pose_model, "cpu", "fp32")
    for n in (1, 3, 4):  # 4 > max: split 3 + 1
        x = torch.rand(n, 3, 256, 192, generator=torch.Generator().manual_seed(n))
        assert rel_err(engine(x), reference(x)) < 1e-4


def test_package_metadata_is_readable_without_loading(packages, pose_model):
    meta = read_meta(packages["pose"])
    assert meta.model == "pose" and meta.weights_sha256 == pose_model.weights_sha256
    assert meta.extra["device"] == "cpu" and meta.extra["num_joints"] == 17


def test_loader_crash_becomes_a_clear_error(packages, monkeypatch, tmp_path):
    """A loader that dies by a signal (as torch 2.11 + CUDA's does) is reported, not fatal."""
    monkeypatch.setattr(aot, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(AlphaPoseTrtError, match="crashed with signal 11 .* use --backend compiled"):
        aot.probe_load(packages["pose"], cache=tmp_path / "probes")
    assert not any((tmp_path / "probes").glob("*.ok")) if (tmp_path / "probes").exists() else True


def test_successful_probe_is_remembered(packages, tmp_path):
    aot.probe_load(packages["pose"], cache=tmp_path)
    assert len(list(tmp_path.glob("*.ok"))) == 1


def test_fp16_on_cpu_is_refused(small_detector, tmp_path):
    with pytest.raises(AlphaPoseTrtError, match="fp16 AOTInductor packages need --device cuda"):
        export_engine(small_detector, "aot", tmp_path / "x.pt2", (1, 1, 1), "fp16", "cpu")
