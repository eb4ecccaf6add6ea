"""The Triton engines with each TritonConv's route chosen per shape: every other swapped
convolution forced onto the cuDNN route (`tiles[key] = None`, what `tune` keeps where cuDNN +
the compiled epilogue is faster), the rest on the Triton kernel, run eagerly in fp32 by Triton's
interpreter on the CPU against the unmodified models: the epilogue's PyTorch form (bias,
activation, residual before or after it) matches the kernel's.

    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks python3 benchmarks/h100-2026-11-27-session13/cpu/triton_mixed_check.py
"""

from pathlib import Path

import torch

from alphapose_trt.models.darknet import Darknet
from alphapose_trt.models.fastpose import FastPose
from frontend_engines import JoinedShortcut, triton_detector, triton_pose
from triton_conv import TritonConv

CFG = Path(__file__).resolve().parents[4] / "shared/reference/darknet/yolov3-spp.cfg"  # ../shared beside the checkout

torch.manual_seed(0)
for name, model, x in [
    ("pose", FastPose().eval(), torch.rand(1, 3, 32, 32)),
    ("detector", Darknet(CFG, img_size=64).eval(), torch.rand(1, 3, 64, 64)),
]:
    with torch.inference_mode():
        ref = model(x)
        (triton_pose if name == "pose" else triton_detector)(model)
        convs = [m for m in model.modules() if isinstance(m, TritonConv)]
        seen = []
        hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, args))) for m in convs]
        model(x)  # record each convolution's inputs to learn its key
        for h in hooks:
            h.remove()
        for i, (m, args) in enumerate(seen):
            key = (tuple(args[0].shape), len(args) > 1 and args[1] is not None)
            m.tiles[key] = None if i % 2 == 0 else m.untuned
        out = model(x)
    routes = [t is None for m in convs for t in m.tiles.values()]
    joined = [m for m in model.modules() if isinstance(m, JoinedShortcut)]
    joined_cudnn = sum(any(t is None for t in j.conv.tiles.values()) for j in joined)
    err = float((out - ref).abs().max() / ref.abs().max())
    print(f"{name}: {sum(routes)} shapes on cuDNN + epilogue, {len(routes) - sum(routes)} on the Triton kernel "
          f"({joined_cudnn} of {len(joined)} joined shortcuts on cuDNN); max error {err:.1e} of the range")
    assert err < 1e-4 and 0 < sum(routes) < len(routes)
