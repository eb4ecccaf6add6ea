"""FastPose architecture, yaml description and checkpoint loading (CPU, small inputs)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torch import nn

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.models.fastpose import (
    Bottleneck,
    FastPose,
    PoseModelSpec,
    SELayer,
    SEResNet,
    fastpose_from_yaml,
    load_checkpoint,
    pose_spec_from_yaml,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "alphapose"
COCO_YAML = REFERENCE / "256x192_res50_lr1e-3_1x.yaml"
HALPE_YAML = REFERENCE / "halpe26_256x192_res50_lr1e-3_1x.yaml"

# Parameter names and shapes as they appear in AlphaPose's fast_res50_256x192.pth.
KNOWN_KEYS = {
    "preact.conv1.weight": (64, 3, 7, 7),
    "preact.bn1.running_mean": (64,),
    "preact.layer1.0.se.fc.0.weight": (256, 256),
    "preact.layer1.0.se.fc.2.bias": (256,),
    "preact.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "preact.layer1.0.downsample.1.running_var": (256,),
    "preact.layer2.0.conv2.weight": (128, 128, 3, 3),
    "preact.layer3.5.bn3.running_var": (1024,),
    "preact.layer4.0.se.fc.2.weight": (2048, 2048),
    "preact.layer4.2.conv3.weight": (2048, 512, 1, 1),
    "duc1.conv.weight": (1024, 512, 3, 3),
    "duc1.bn.running_mean": (1024,),
    "duc2.conv.weight": (512, 256, 3, 3),
    "duc2.bn.weight": (512,),
    "conv_out.weight": (17, 128, 3, 3),
    "conv_out.bias": (17,),
}


@pytest.fixture(scope="module")
def model() -> FastPose:
    torch.manual_seed(0)
    return FastPose().eval()


@pytest.fixture(scope="module")
def checkpoint(model: FastPose, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "fast_res50_256x192.pth"
    torch.save(model.state_dict(), path)
    return path


def _tiny() -> nn.Module:
    """A two-layer module for loader tests that don't need FastPose's 160 MB of weights."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()


# ---------------------------------------------------------------------------- architecture


def test_parameter_count_matches_alphapose(model: FastPose) -> None:
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 40.6e6) < 0.05e6, count


def test_output_is_quarter_resolution_heatmaps(model: FastPose) -> None:
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 192))
    assert out.shape == (1, 17, 64, 48)
    assert torch.isfinite(out).all()


def test_state_dict_uses_alphapose_names(model: FastPose) -> None:
    state = model.state_dict()
    for key, shape in KNOWN_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    se_blocks = sorted({k.split(".se.")[0] for k in state if ".se." in k})
    # SE lives only in the first block of each stage, beside the projection shortcut.
    assert se_blocks == [f"preact.layer{i}.0" for i in range(1, 5)]
    assert not any(k.startswith("preact.layer1.1.downsample") for k in state)


def test_backbone_keys_are_torchvision_resnet50_plus_se(model: FastPose) -> None:
    reference = {
        k: v.shape for k, v in torchvision.models.resnet50().state_dict().items()
        if not k.startswith("fc.")
    }
    ours = {
        k[len("preact."):]: v.shape for k, v in model.state_dict().items()
        if k.startswith("preact.") and ".se." not in k
    }
    assert ours == reference


def _open_or_close_se(backbone: nn.Module, gate_logit: float) -> None:
    """Make every SE gate a constant sigmoid(gate_logit) (1 for large, 0 for very negative)."""
    for module in backbone.modules():
        if isinstance(module, SELayer):
            module.fc[2].weight.data.zero_()
            module.fc[2].bias.data.fill_(gate_logit)


def test_backbone_with_open_se_gates_equals_torchvision_resnet50() -> None:
    """Wiring (stride on the 3x3, shortcut, stem) checked against torchvision's ResNet-50."""
    torch.manual_seed(1)
    reference = torchvision.models.resnet50().eval()
    ours = SEResNet(50).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and all(".se." in k for k in missing)
    _open_or_close_se(ours, 40.0)  # sigmoid(40) == 1.0 in float32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        got = ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_se_gates_the_residual_branch_before_the_add() -> None:
    block = Bottleneck(256, 128, stride=2, first=True).eval()
    _open_or_close_se(block, -200.0)  # gate 0: the block reduces to relu(shortcut(x))
    x = torch.randn(1, 256, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(block.downsample(x)))


# ---------------------------------------------------------------------------- spec and yaml


def test_default_spec_describes_fast_res50_256x192() -> None:
    spec = PoseModelSpec()
    assert spec.input_size == (256, 192) and spec.heatmap_size == (64, 48)
    assert spec.pixel_mean == (0.406, 0.457, 0.480)
    assert spec.aspect_ratio == pytest.approx(0.75)
    assert spec.flip_pairs[0] == (1, 2) and len(spec.flip_pairs) == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_joints = 26  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"input_size": (250, 192), "heatmap_size": (62, 48)}, "input_size"),
        ({"heatmap_size": (32, 24)}, "heatmap_size"),
        ({"num_layers": 34}, "num_layers"),
        ({"num_joints": 0}, "num_joints"),
    ],
)
def test_invalid_spec_is_refused(kwargs: dict, field: str) -> None:
    with pytest.raises(AlphaPoseTrtError, match=f"PoseModelSpec.{field}"):
        PoseModelSpec(**kwargs)


@pytest.mark.parametrize("path, joints", [(COCO_YAML, 17), (HALPE_YAML, 26)])
def test_reference_yamls_build_the_right_model(path: Path, joints: int) -> None:
    model, spec = fastpose_from_yaml(path)
    assert spec == PoseModelSpec(num_joints=joints)
    assert model.conv_out.out_channels == joints
    assert not model.training


def _write_variant(tmp_path: Path, edit) -> Path:
    cfg = yaml.safe_load(COCO_YAML.read_text())
    edit(cfg)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["MODEL"].update(TYPE="SimplePose"), "MODEL.TYPE"),
        (lambda c: c["MODEL"].update(NUM_LAYERS=34), "MODEL.NUM_LAYERS"),
        (lambda c: c["MODEL"].update(NUM_LAYERS="50"), "MODEL.NUM_LAYERS"),
        (lambda c: c["MODEL"].update(DCN={"MODULATED": False}), "MODEL.DCN"),
        (lambda c: c["DATA_PRESET"].update(TYPE="simple_smpl"), "DATA_PRESET.TYPE"),
        (lambda c: c["DATA_PRESET"].update(IMAGE_SIZE=[250, 192]), "DATA_PRESET.IMAGE_SIZE"),
        (lambda c: c["DATA_PRESET"].update(IMAGE_SIZE=[256]), "DATA_PRESET.IMAGE_SIZE"),
        (lambda c: c["DATA_PRESET"].update(HEATMAP_SIZE=[32, 24]), "DATA_PRESET.HEATMAP_SIZE"),
        (lambda c: c["DATA_PRESET"].pop("NUM_JOINTS"), "DATA_PRESET.NUM_JOINTS"),
    ],
)
def test_unsupported_yaml_values_name_file_and_key(tmp_path: Path, edit, key: str) -> None:
    path = _write_variant(tmp_path, edit)
    with pytest.raises(AlphaPoseTrtError) as info:
        pose_spec_from_yaml(path)
    message = str(info.value)
    assert str(path) in message and key in message and "\n" not in message


def test_unreadable_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(AlphaPoseTrtError, match="no such AlphaPose config"):
        fastpose_from_yaml(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [unclosed\n")
    with pytest.raises(AlphaPoseTrtError, match="broken.yaml: not a readable yaml"):
        fastpose_from_yaml(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(AlphaPoseTrtError, match="mapping"):
        fastpose_from_yaml(scalar)


def test_fastpose_refuses_unsupported_depth() -> None:
    with pytest.raises(AlphaPoseTrtError, match="num_layers"):
        FastPose(num_layers=18)


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(model: FastPose, checkpoint: Path) -> None:
    fresh = FastPose()
    load_checkpoint(fresh, checkpoint)
    got = fresh.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},
        lambda s: {f"module.{k}": v for k, v in s.items()},
    ],
    ids=["plain", "state_dict", "model+module", "module"],
)
def test_wrapped_and_prefixed_checkpoints_load(tmp_path: Path, wrap) -> None:
    torch.manual_seed(2)
    source = _tiny()
    path = tmp_path / "tiny.pth"
    torch.save(wrap(source.state_dict()), path)
    target = _tiny()
    load_checkpoint(target, path)
    got = target.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(got[key], value), key


def test_checkpoint_without_num_batches_tracked_loads(tmp_path: Path) -> None:
    source = _tiny()
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pth")
    target = _tiny()
    load_checkpoint(target, tmp_path / "old.pth")
    assert torch.equal(target[0].weight, source[0].weight)


def test_wrong_joint_count_is_reported_with_shapes(checkpoint: Path) -> None:
    halpe = FastPose(num_joints=26)
    before = halpe.conv_out.weight.clone()
    with pytest.raises(AlphaPoseTrtError) as info:
        load_checkpoint(halpe, checkpoint)
    message = str(info.value)
    assert message.startswith(f"{checkpoint}:")
    assert "num_joints=26" in message and "2 mis-shaped" in message
    assert "conv_out.weight (17, 128, 3, 3) vs model (26, 128, 3, 3)" in message
    assert "missing" not in message and "unexpected" not in message
    assert torch.equal(halpe.conv_out.weight, before)  # nothing half-loaded


def test_missing_and_unexpected_keys_are_counted(model: FastPose, tmp_path: Path) -> None:
    state = dict(model.state_dict())
    dropped = [k for k in state if k.startswith("duc2.")][:5]
    for key in dropped:
        del state[key]
    for i in range(4):
        state[f"head.extra{i}.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(AlphaPoseTrtError) as info:
        load_checkpoint(model, path)  # refused before anything is copied into `model`
    message = str(info.value)
    assert "partial.pth" in message
    assert f"5 missing ({', '.join(dropped[:3])}, ...)" in message
    assert "4 unexpected (head.extra0.weight" in message
    assert "mis-shaped" not in message


class _RunsCode:
    """Unpickling this would call os.system: the attack weights_only loading exists to stop."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(AlphaPoseTrtError, match=r"evil\.pth: refused: .*system") as info:
        load_checkpoint(_tiny(), path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(AlphaPoseTrtError, match="absent.pth: no such checkpoint file"):
        load_checkpoint(_tiny(), tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(AlphaPoseTrtError, match="garbage.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(_tiny(), garbage)
    truncated = tmp_path / "truncated.pth"
    with open(checkpoint, "rb") as fh:
        truncated.write_bytes(fh.read(1 << 20))
    with pytest.raises(AlphaPoseTrtError, match="truncated.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(_tiny(), truncated)


def test_checkpoint_without_tensors_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.001}}, path)
    with pytest.raises(AlphaPoseTrtError, match="meta.pth: no state_dict of tensors found"):
        load_checkpoint(_tiny(), path)
