"""benchmarks/triton_conv.py's kernel against fp32 F.conv2d + bias + activation (+ residual),
run by Triton's interpreter on the CPU before any device time is spent on it:

    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks python3 benchmarks/h100-2026-11-27-session12/cpu/triton_conv_check.py

Shapes: 3x3 stride 1 and 2, 1x1; channel counts that are and are not multiples of the tile
(both mask paths); the residual before (ReLU, pose) and after (leaky ReLU, darknet) the activation.
"""

import torch
import torch.nn.functional as F

from triton_conv import ConvTile, conv_act, pack_weight

torch.manual_seed(0)
cl = torch.channels_last
# (batch, cin, height, width, cout, kernel, stride, padding, slope, residual, tile)
for (n, cin, h, w, cout, k, s, p, slope, res, tile) in [
    (2, 32, 9, 11, 48, 3, 1, 1, 0.1, True, ConvTile(32, 32, 16, 4, 1)),
    (1, 64, 10, 7, 32, 3, 2, 1, 0.0, True, ConvTile(16, 64, 32, 4, 1)),
    (2, 40, 5, 6, 40, 1, 1, 0, 0.1, False, ConvTile(32, 16, 32, 4, 1)),
    (1, 32, 6, 5, 32, 3, 1, 1, 0.1, True, ConvTile(16, 32, 32, 4, 1)),
]:
    x = torch.randn(n, cin, h, w).half().contiguous(memory_format=cl)
    wt = (torch.randn(cout, cin, k, k) * 0.1).half()
    b = torch.randn(cout).half()
    ref = F.conv2d(x.float(), wt.float(), b.float(), s, p)
    r = torch.randn_like(ref).half().contiguous(memory_format=cl) if res else None
    after = slope != 0.0
    if res and not after:
        ref = ref + r.float()
    ref = torch.where(ref >= 0, ref, ref * slope)
    if res and after:
        ref = ref + r.float()
    out = torch.empty(ref.shape, dtype=torch.float16).contiguous(memory_format=cl)
    conv_act(x, pack_weight(wt), b, out, s, p, slope, tile, r, after)
    err = float((out.float() - ref).abs().max() / ref.abs().max())
    print(f"x {tuple(x.shape)} -> {tuple(out.shape)} k{k} s{s} residual {res}: max error {err:.1e} of the range")
    assert err < 3e-3
