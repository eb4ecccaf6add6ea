"""The Triton engines' model surgery (frontend_engines.triton_pose / triton_detector), run eagerly
in fp32 by Triton's interpreter on the CPU against the unmodified models (small inputs, random
weights): every convolution swapped, every darknet shortcut joined inside a kernel, same output.

    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks python3 benchmarks/h100-2026-11-27-session12/cpu/triton_engines_check.py
"""

import time
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
        swapped = sum(isinstance(m, TritonConv) for m in model.modules())
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        start = time.time()
        out = model(x)
    err = float((out - ref).abs().max() / ref.abs().max())
    print(f"{name}: {swapped} convolutions as TritonConv, {convs} left as Conv2d, "
          f"{sum(isinstance(m, JoinedShortcut) for m in model.modules())} shortcuts joined; max error {err:.1e} of the range "
          f"({time.time() - start:.0f} s interpreted)")
    assert err < 1e-4
