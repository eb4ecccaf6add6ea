"""The compiled engine on the CPU (Inductor's C++ backend): each engine runs its own weights.

Two engines of the same module class in one process must not share compiled code: Dynamo caches
compiled frames per code object, and only its guards on the module tell two instances apart.
The CUDA path (Triton kernels, CUDA graphs) is checked against eager fp32 in test_gpu.py.
"""

from __future__ import annotations

import torch
from torch import nn

from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.models.load import LoadedModel


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def _model(seed: int) -> LoadedModel:
    torch.manual_seed(seed)
    module = _TinyNet().eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.5, 0.5)
        module.bn.running_var.uniform_(0.5, 2.0)
    return LoadedModel(kind="pose", module=module, input_hw=(8, 6), weights_sha256=f"seed{seed}")


def test_two_compiled_engines_of_one_class_keep_their_own_weights() -> None:
    models = [_model(0), _model(1)]
    engines = [CompiledEngine(m, "cpu", "fp32", max_batch=2) for m in models]
    x = torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = [m.module(x) for m in models]
    assert not torch.allclose(want[0], want[1], atol=1e-3)
    for engine, expected in zip(engines, want):
        torch.testing.assert_close(engine(x), expected, rtol=1e-4, atol=1e-5)
    # the first engine again, after the second compiled: still its own weights
    torch.testing.assert_close(engines[0](x[:1]), want[0][:1], rtol=1e-4, atol=1e-5)


def test_many_engines_of_one_model_class_compile_in_one_process() -> None:
    """Each engine's buckets add Dynamo cache entries to the class's forward: the fifth engine of
    two buckets used to hit the recompile limit of 8."""
    x = torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(3))
    for seed in range(5):
        model = _model(10 + seed)
        engine = CompiledEngine(model, "cpu", "fp32", max_batch=2)
        with torch.no_grad():
            want = model.module(x)
        for n in (1, 2):
            torch.testing.assert_close(engine(x[:n]), want[:n], rtol=1e-4, atol=1e-5)
