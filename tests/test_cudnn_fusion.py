"""The fused convolutions' surgery (engines/cudnn_fusion.py) computes what the models compute.

On the CPU `conv_act` runs its PyTorch reference, so these tests hold the rewritten models (folded
BatchNorm, residuals and darknet shortcuts joined into the convolution before them) to the
originals; the cuDNN kernels themselves are checked against eager fp32 in test_gpu.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from alphapose_trt.engines import cudnn_fusion
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.cudnn_fusion import ConvAct, JoinedShortcut, conv_act, fuse_convs
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.models.darknet import Darknet, Shortcut, parse_cfg
from test_darknet import REFERENCE, SIZE, _randomize, _slim


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


def test_pose_net_with_fused_convolutions_matches(pose_model):
    module = copy.deepcopy(pose_model.module)
    assert fuse_convs(module) == 54  # 16 bottlenecks x 3, 4 projection shortcuts, 2 DUC
    assert sum(isinstance(m, ConvAct) for m in module.modules()) == 54
    x = torch.rand(2, 3, *pose_model.input_hw, generator=torch.Generator().manual_seed(0)) - 0.5
    with torch.no_grad():
        assert rel_err(module(x), pose_model.module(x)) < 1e-5


@pytest.mark.parametrize("name, convs, shortcuts", [("yolov3-spp", 75, 23), ("yolov3-tiny", 12, 0)])
@pytest.mark.parametrize("join", [True, False])
def test_darknet_with_fused_convolutions_and_joined_shortcuts_matches(name, convs, shortcuts, join):
    model = _randomize(Darknet(_slim(parse_cfg(REFERENCE / f"{name}.cfg")), img_size=SIZE), seed=5)
    fused = copy.deepcopy(model)
    # all but the RGB convolution (the heads too: no PaddedConv here)
    assert fuse_convs(fused, join_shortcuts=join) == convs
    layers = list(fused.module_list)
    assert sum(isinstance(m, JoinedShortcut) for m in layers) == (shortcuts if join else 0)
    assert sum(type(m) is Shortcut for m in layers) == (0 if join else shortcuts)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < 1e-5


@pytest.mark.parametrize("stride, residual, before", [(1, False, False), (2, False, False), (1, True, True),
                                                      (1, True, False)])
def test_the_traced_op_has_the_real_ops_shape_and_layout(stride, residual, before):
    """Inductor plans buffers from the fake implementation: it must match what the op returns."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 9, 7, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 8, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last)
    b = torch.randn(1, 16, 1, 1, generator=gen)
    shape = (2, 16, (9 + 2 - 3) // stride + 1, (7 + 2 - 3) // stride + 1)
    z = torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last) if residual else None
    real = conv_act(x, w, b, z, 0.1, before, stride, 1)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = conv_act(*(mode.from_tensor(t) if t is not None else None for t in (x, w, b, z)), 0.1, before, stride, 1)
    assert real.shape == fake.shape == shape and real.stride() == fake.stride()
    expected = torch.nn.functional.conv2d(x, w, b.flatten(), stride, 1)
    if residual and before:
        expected = expected + z
    expected = torch.nn.functional.leaky_relu(expected, 0.1)
    if residual and not before:
        expected = expected + z
    torch.testing.assert_close(real, expected, rtol=1e-5, atol=1e-5)


def test_fused_convolutions_are_cuda_fp16_only_and_need_the_frontend(detector_model, monkeypatch):
    assert not CompiledEngine(detector_model, "cpu", "fp32", max_batch=1).fuse_convs
    assert not any(isinstance(m, ConvAct) for m in CompiledEngine(detector_model, "cpu", "fp32", max_batch=1,
                                                                  fuse_convs=True).module.modules())
    monkeypatch.setattr(cudnn_fusion, "frontend", lambda: None)
    with pytest.raises(AlphaPoseTrtError, match=r"pip install 'alphapose-trt\[cudnn\]'"):
        CompiledEngine(detector_model, "cuda", "fp16", max_batch=1, fuse_convs=True)
