"""The Triton engines' model surgery (frontend_engines.triton_pose / triton_detector), run eagerly
in fp32 by Triton's interpreter on the CPU against the unmodified models (small inputs, random
weights): every convolution swapped, every darknet shortcut joined inside a kernel, same output.

--mixed (session 13): every other swapped convolution forced onto the cuDNN route
(`tiles[key] = None`, what `tune` keeps where cuDNN + the compiled epilogue is faster), the rest on
the Triton kernel: the epilogue's PyTorch form (bias, activation, residual before or after it)
matches the kernel's.

    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks python3 benchmarks/h100-2026-11-27-session12/cpu/triton_engines_check.py [--mixed]
"""

import sys
import time
from pathlib import Path

import torch

from alphapose_trt.models.darknet import Darknet
from alphapose_trt.models.fastpose import FastPose
from frontend_engines import JoinedShortcut, triton_detector, triton_pose
from triton_conv import TritonConv

CFG = Path(__file__).resolve().parents[4] / "shared/reference/darknet/yolov3-spp.cfg"  # ../shared beside the checkout
MIXED = "--mixed" in sys.argv[1:]


def mix_routes(model: torch.nn.Module, x: torch.Tensor, convs: list[TritonConv]) -> None:
    """Record each convolution's input shapes in one run, then route every other one to cuDNN."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, args))) for m in convs]
    model(x)
    for h in hooks:
        h.remove()
    for i, (m, args) in enumerate(seen):
        key = (tuple(args[0].shape), len(args) > 1 and args[1] is not None)
        m.tiles[key] = None if i % 2 == 0 else m.untuned


torch.manual_seed(0)
for name, model, x in [
    ("pose", FastPose().eval(), torch.rand(1, 3, 32, 32)),
    ("detector", Darknet(CFG, img_size=64).eval(), torch.rand(1, 3, 64, 64)),
]:
    with torch.inference_mode():
        ref = model(x)
        (triton_pose if name == "pose" else triton_detector)(model)
        convs = [m for m in model.modules() if isinstance(m, TritonConv)]
        if MIXED:
            mix_routes(model, x, convs)
        start = time.time()
        out = model(x)
    err = float((out - ref).abs().max() / ref.abs().max())
    joined = [m for m in model.modules() if isinstance(m, JoinedShortcut)]
    if MIXED:
        routes = [t is None for m in convs for t in m.tiles.values()]
        joined_cudnn = sum(any(t is None for t in j.conv.tiles.values()) for j in joined)
        print(f"{name}: {sum(routes)} shapes on cuDNN + epilogue, {len(routes) - sum(routes)} on the Triton kernel "
              f"({joined_cudnn} of {len(joined)} joined shortcuts on cuDNN); max error {err:.1e} of the range")
        assert 0 < sum(routes) < len(routes)
    else:
        print(f"{name}: {len(convs)} convolutions as TritonConv, "
              f"{sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())} left as Conv2d, "
              f"{len(joined)} shortcuts joined; max error {err:.1e} of the range ({time.time() - start:.0f} s interpreted)")
    assert err < 1e-4
