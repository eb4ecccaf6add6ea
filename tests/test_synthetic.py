"""Synthetic weights: real file formats, real loaders, deterministic, and numerically sane.

"Sane" is checked where it matters for fp16 engines: every intermediate activation is finite and
below 1e3 in float32 (fp16 overflows at 65504, so this leaves a 60x margin), an actual fp16
forward of FastPose matches float32, and the outputs look like a trained model's (heatmap peaks
near 1, a crowd-sized number of person boxes, box sizes far below fp16's limit).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from alphapose_trt.models.darknet import YoloLayer, build_yolov3_spp, load_darknet_weights
from alphapose_trt.models.fastpose import FastPose, PoseModelSpec, load_checkpoint
from alphapose_trt.models import synthetic
from alphapose_trt.models.synthetic import (
    FASTPOSE_FILENAME,
    YOLOV3_SPP_FILENAME,
    calibrate_batchnorm,
    random_images,
    randomize_weights,
    synthetic_fastpose,
    synthetic_yolov3_spp,
    write_synthetic_weights,
)

SEED = 0
DETECTOR_TEST_SIZE = 320  # checks at 320 px: 3.6x cheaper than 608 on CPU
ACTIVATION_LIMIT = 1e3
FP16_MAX = 65504.0


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_synthetic_weights(tmp_path_factory.mktemp("weights"), seed=SEED)


@pytest.fixture(scope="module")
def pose_model() -> FastPose:
    return synthetic_fastpose(SEED)


@pytest.fixture(scope="module")
def detector_model(written: dict[str, Path]) -> nn.Module:
    """The written detector file, loaded the way users load real weights."""
    model = build_yolov3_spp(DETECTOR_TEST_SIZE)
    load_darknet_weights(model, written["detector"])
    return model.eval()


def _crops(seed: int, count: int, height: int = 256, width: int = 192) -> torch.Tensor:
    images = random_images(torch.Generator().manual_seed(seed), count, height, width)
    return images - torch.tensor(PoseModelSpec().pixel_mean).view(1, 3, 1, 1)


def _forward_with_max_activations(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Run the model, recording each module's largest |output| (inf/nan show up as such)."""
    peaks: dict[str, float] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: peaks.__setitem__(name, out.abs().max().item())
        )
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, peaks


# ---------------------------------------------------------------------------- generic parts


def test_calibrate_batchnorm_stores_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, momentum=0.3), nn.ReLU(),
                          nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4))
    images = torch.rand(2, 3, 20, 20) * 5 + 3
    calibrate_batchnorm(model, images)
    assert not model.training
    assert model[1].momentum == 0.3 and model[4].momentum == 0.1
    with torch.no_grad():
        pre = model[0](images)
        torch.testing.assert_close(model[1].running_mean, pre.mean(dim=(0, 2, 3)))
        torch.testing.assert_close(model[1].running_var, pre.var(dim=(0, 2, 3)))
        out = model(images)
    # Every BN output now has per-channel mean ~beta (0) and std ~gamma (1) on these images (not
    # exactly: eval mode divides by the unbiased variance, train mode by the biased one).
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(4), atol=2e-3, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-2, rtol=0)


def test_randomization_depends_only_on_the_seed() -> None:
    def draw(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed + 100)  # the global RNG must not matter
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
        generator = torch.Generator().manual_seed(seed)
        randomize_weights(model, generator)
        return [*model.state_dict().values(), random_images(generator, 1, 32, 32)]

    first, again, other = draw(1), draw(1), draw(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert 0.0 <= first[-1].min() and first[-1].max() <= 1.0


# ---------------------------------------------------------------------------- files


def test_files_have_the_real_names_and_formats(written: dict[str, Path]) -> None:
    assert written["pose"].name == FASTPOSE_FILENAME == "fast_res50_256x192.pth"
    assert written["detector"].name == YOLOV3_SPP_FILENAME == "yolov3-spp.weights"
    state = torch.load(written["pose"], map_location="cpu", weights_only=True)
    # AlphaPose's model zoo format: a plain state_dict with FastPose's own key names.
    assert list(state) == list(FastPose().state_dict())
    assert "preact.layer1.0.se.fc.0.weight" in state and "conv_out.bias" in state


def test_pose_file_loads_and_reproduces_the_in_memory_model(
    written: dict[str, Path], pose_model: FastPose
) -> None:
    loaded = FastPose().eval()
    load_checkpoint(loaded, written["pose"])
    # Written and in-memory models were built separately from the same seed: equal weights
    # prove both the file round trip and determinism.
    got = loaded.state_dict()
    for key, value in pose_model.state_dict().items():
        assert torch.equal(got[key], value), key
    x = _crops(seed=11, count=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pose_model(x), rtol=0, atol=0)


def test_detector_file_loads_and_reproduces_the_in_memory_model(tmp_path: Path) -> None:
    # Calibrating at 64 px instead of 608 keeps this CPU test fast; the code path is the same.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic, "DETECTOR_CALIBRATION_SIZE", 64)
        in_memory = synthetic_yolov3_spp(SEED, img_size=64)
        path = synthetic.write_synthetic_yolov3_spp(tmp_path / "d.weights", seed=SEED)
    loaded = build_yolov3_spp(64)
    load_darknet_weights(loaded, path)
    got = loaded.state_dict()
    for key, value in in_memory.state_dict().items():
        if not key.endswith("num_batches_tracked"):  # not part of darknet's format
            assert torch.equal(got[key], value), key
    x = random_images(torch.Generator().manual_seed(12), 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), in_memory(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------- numerics


def test_pose_activations_stay_order_one(pose_model: FastPose) -> None:
    heatmaps, peaks = _forward_with_max_activations(pose_model, _crops(seed=21, count=2))
    worst = max(peaks, key=peaks.get)
    assert peaks[worst] < ACTIVATION_LIMIT, (worst, peaks[worst])
    assert heatmaps.shape == (2, 17, 64, 48)
    # Like a trained model's heatmaps: near zero on average, per-joint peaks around 0.5-1.5.
    assert abs(heatmaps.mean().item()) < 0.1
    assert 0.5 < heatmaps.amax(dim=(2, 3)).mean().item() < 1.5


def test_pose_fp16_forward_matches_fp32(pose_model: FastPose) -> None:
    x = _crops(seed=22, count=1, height=128, width=96)  # fp16 convs are slow on CPU
    half = copy.deepcopy(pose_model).half()
    with torch.no_grad():
        reference = pose_model(x)
        got = half(x.half()).float()
    assert torch.isfinite(got).all()
    # fp16 keeps ~3 significant digits through 50+ layers: allow 0.05 on heatmaps of std ~0.25.
    torch.testing.assert_close(got, reference, rtol=0, atol=0.05)


def test_detector_activations_and_outputs_are_realistic(detector_model: nn.Module) -> None:
    x = random_images(torch.Generator().manual_seed(31), 1, DETECTOR_TEST_SIZE, DETECTOR_TEST_SIZE)
    rows, peaks = _forward_with_max_activations(detector_model, x)
    # YOLO layers output decoded pixel sizes, bounded separately below.
    inner = {
        k: v for k, v in peaks.items()
        if not isinstance(detector_model.get_submodule(k), YoloLayer)
    }
    worst = max(inner, key=inner.get)
    assert inner[worst] < ACTIVATION_LIMIT, (worst, inner[worst])
    assert torch.isfinite(rows).all()
    assert rows[..., 2:4].max() < FP16_MAX / 10  # box w, h in pixels: fp16 can hold them
    objectness, classes = rows[0, :, 4], rows[0, :, 5:].argmax(dim=-1)
    people = int(((objectness > 0.1) & (classes == 0)).sum())
    # AlphaPose keeps objectness > 0.1 and class person: a crowd, not none nor thousands.
    assert 1 <= people <= 200, people
