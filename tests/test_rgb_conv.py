"""Each model's RGB convolution as one kernel (engines/rgb_conv.py): the folded modules compute
what the models compute, and the Triton kernel what F.conv2d + bias + activation compute (run by
Triton's interpreter on the CPU; the GPU test runs it compiled)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from alphapose_trt.engines.eager import prepare_module
from alphapose_trt.engines.rgb_conv import RGBConv, fuse_rgb_convs
from alphapose_trt.models.darknet import ConvBlock

pytest.importorskip("triton")  # torch's Linux wheels bring it; the kernel module imports it


@pytest.mark.parametrize("kind", ["detector", "pose"])
def test_only_the_rgb_convolution_is_fused(kind, detector_model, pose_model):
    model = detector_model if kind == "detector" else pose_model
    module = copy.deepcopy(model.module)
    assert fuse_rgb_convs(module) == 1
    fused = [m for m in module.modules() if isinstance(m, RGBConv)]
    assert len(fused) == 1 and fused[0].weight.shape[1] == 3
    assert fused[0].slope == pytest.approx(0.1 if kind == "detector" else 0.0)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.module.modules()) - 1
    assert all(c.in_channels != 3 for c in convs)


@pytest.mark.parametrize("kind", ["detector", "pose"])
def test_the_fused_models_compute_what_the_models_compute(kind, detector_model, pose_model):
    """BatchNorm folded into the weights and bias (CPU: the module's F.conv2d path)."""
    model = detector_model if kind == "detector" else pose_model
    plain = prepare_module(model, torch.device("cpu"), "fp32", channels_last=False)
    fused = prepare_module(model, torch.device("cpu"), "fp32", channels_last=False, fuse_rgb=True)
    assert any(isinstance(m, RGBConv) for m in fused.modules())
    h, w = model.input_hw
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref, out = plain(x), fused(x)
    assert (out - ref).abs().amax() <= 1e-4 * ref.abs().amax()


@pytest.mark.parametrize("activation, slope", [(nn.ReLU(), 0.0), (nn.Identity(), 1.0)])
def test_relu_and_linear_blocks_take_their_slope(activation, slope):
    block = ConvBlock(3, {"batch_normalize": 0, "filters": 8, "size": 3, "stride": 2, "padding": 1, "groups": 1,
                          "activation": "leaky"}).eval()
    block.act = activation
    model = nn.Sequential(block)
    assert fuse_rgb_convs(model) == 1 and model[0].slope == slope
    x = torch.randn(2, 3, 9, 7)
    torch.testing.assert_close(model(x), block(x), rtol=1e-5, atol=1e-5)


_KERNEL_CHECK = textwrap.dedent("""
    import torch, torch.nn.functional as F
    from alphapose_trt.engines.rgb_conv import rgb_conv
    torch.manual_seed(0)
    # (batch, height, width, out channels, kernel, stride, padding, slope, channels_last input, dtype)
    for n, h, w, cout, k, s, p, slope, cl, dtype in [(1, 3, 40, 32, 3, 1, 1, 0.1, False, torch.float32),
                                                    (2, 5, 9, 20, 7, 2, 3, 0.0, True, torch.float16)]:
        x = torch.randn(n, 3, h, w, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        weight = (torch.randn(cout, 3, k, k) * 0.2).to(dtype).contiguous(memory_format=torch.channels_last)
        bias = torch.randn(cout, dtype=dtype)
        y = rgb_conv(x, weight, bias, s, p, slope)
        ref = F.conv2d(x.float(), weight.float(), bias.float(), s, p)
        ref = torch.where(ref >= 0, ref, ref * slope)
        assert y.shape == ref.shape and y.dtype == dtype, (y.shape, y.dtype)
        assert y.is_contiguous(memory_format=torch.channels_last)
        err = float((y.float() - ref).abs().max() / ref.abs().max())
        assert err < (1e-6 if dtype == torch.float32 else 2e-3), err
        print("ok", tuple(y.shape), err)
""")


def test_the_kernel_matches_conv_bias_activation():
    """Two shapes: the detector's (3x3, one tile of taps) on a row wider than one program's block
    (40 > 32 pixels), in fp32 (true fp32 products); the pose stem's (7x7 stride 2: 147 taps in 5
    tiles) on channels_last fp16 input with a weight laid out channels_last, 20 output channels.
    Triton's interpreter reads TRITON_INTERPRET when a kernel is defined, hence the child process."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", _KERNEL_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("ok") == 2
