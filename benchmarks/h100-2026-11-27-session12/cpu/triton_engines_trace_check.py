"""Does Dynamo trace the Triton engines' modules whole (fullgraph) on the CPU? Triton's
interpreter kernels are refused by Dynamo, so `conv_act` is swapped here for the same arithmetic
in PyTorch ops; what is traced is everything else: TritonConv's per-shape tile lookup and the
detector's joined shortcuts (`JoinedShortcut`).

    PYTHONPATH=.:benchmarks python3 benchmarks/h100-2026-11-27-session12/cpu/triton_engines_trace_check.py
"""

from pathlib import Path

import torch
import torch.nn.functional as F

import triton_conv
from alphapose_trt.models.darknet import Darknet
from alphapose_trt.models.fastpose import FastPose
from frontend_engines import triton_detector, triton_pose

CFG = Path(__file__).resolve().parents[4] / "shared/reference/darknet/yolov3-spp.cfg"  # ../shared beside the checkout


def torch_conv_act(x, packed, bias, out, stride, padding, slope, tile, residual=None, add_after_act=True):
    y = F.conv2d(x, packed.permute(3, 2, 0, 1), bias, stride, padding)
    if residual is not None and not add_after_act:
        y = y + residual
    y = torch.where(y >= 0, y, y * slope)
    if residual is not None and add_after_act:
        y = y + residual
    out.copy_(y)


triton_conv.conv_act = torch_conv_act
torch.manual_seed(0)
for name, model, x in [("pose", FastPose().eval(), torch.rand(2, 3, 32, 32)),
                       ("detector", Darknet(CFG, img_size=64).eval(), torch.rand(2, 3, 64, 64))]:
    with torch.inference_mode():
        ref = model(x)
        (triton_pose if name == "pose" else triton_detector)(model)
        out = torch.compile(model, backend="eager", fullgraph=True)(x)
    err = float((out - ref).abs().max() / ref.abs().max())
    print(f"{name}: traced whole (fullgraph), max error {err:.1e} of the range")
    assert err < 1e-5
