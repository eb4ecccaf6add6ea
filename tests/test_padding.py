"""Channel padding (engines/padding.py): the padded models compute what the models compute."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from alphapose_trt.engines.eager import prepare_module
from alphapose_trt.engines.padding import PaddedConv, pad_channels


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(3, 32, 3, 1), (128, 17, 3, 1), (3, 255, 1, 2)])
def test_a_padded_convolution_gives_the_same_output(shape, bias):
    cin, cout, k, stride = shape
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=bias)
    padded = PaddedConv(conv, -(-cin // 4) * 4 if cin == 3 else cin, -(-cout // 8) * 8)
    x = torch.randn(2, cin, 13, 11)
    out = padded(x)
    assert padded.conv.in_channels % 4 == 0 and padded.conv.out_channels % 8 == 0
    assert out.shape == conv(x).shape
    torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)


def test_only_rgb_inputs_and_odd_output_counts_are_padded():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 6, 1, groups=2), nn.Conv2d(6, 17, 1))
    assert pad_channels(model) == 2
    assert [type(m).__name__ for m in model] == ["PaddedConv", "Conv2d", "Conv2d", "PaddedConv"]
    assert (model[0].conv.in_channels, model[0].conv.out_channels) == (4, 16)
    assert (model[3].conv.in_channels, model[3].conv.out_channels) == (6, 24)


@pytest.mark.parametrize("kind", ["detector", "pose"])
def test_padded_models_match_the_models(kind, detector_model, pose_model):
    """The detector's first convolution and its three 255-channel heads, the pose net's first
    convolution and its 17 heatmaps, through the engines' module preparation (channels_last)."""
    model = detector_model if kind == "detector" else pose_model
    plain = prepare_module(model, torch.device("cpu"), "fp32", channels_last=True)
    padded = prepare_module(model, torch.device("cpu"), "fp32", channels_last=True, pad_convs=True)
    assert sum(isinstance(m, PaddedConv) for m in padded.modules()) == (4 if kind == "detector" else 2)
    assert not any(isinstance(m, PaddedConv) for m in model.module.modules())  # the loaded model is untouched
    h, w = model.input_hw
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, out = plain(x), padded(x)
    scale = ref.abs().amax()
    assert (out - ref).abs().amax() <= 1e-5 * scale


def test_padding_a_copy_leaves_the_original_convolution_alone():
    conv = nn.Conv2d(3, 17, 3)
    before = copy.deepcopy(conv.state_dict())
    PaddedConv(conv, 4, 24)
    for name, value in conv.state_dict().items():
        assert torch.equal(value, before[name])


def test_a_padded_model_exports_with_a_dynamic_batch():
    """AOTInductor packages on CUDA are built from the padded module through torch.export."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 17, 1)).eval()
    assert pad_channels(model) == 2
    batch = torch.export.Dim("batch", min=1, max=4)
    program = torch.export.export(model, (torch.rand(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(program.module()(x), model(x))
