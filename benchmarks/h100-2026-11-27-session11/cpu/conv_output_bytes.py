"""Bytes the models' convolutions write per item in fp16 (forward hooks on every nn.Conv2d of the
synthetic models, on the CPU): what one separate epilogue pass reads and writes again.
    PYTHONPATH=. python3 benchmarks/h100-2026-11-27-session11/cpu/conv_output_bytes.py
"""
import torch

from alphapose_trt.bench import BenchOptions, load_models
from alphapose_trt.cli import build_parser

HBM_TBPS = 3.35
opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cpu"]))
models, _ = load_models(opts, ("detector", "pose"))
for kind, batch in (("detector", 8), ("pose", 64)):
    loaded = models[kind]
    sizes = {"activated": 0, "heads (255 channels)": 0}

    def hook(conv, args, out):
        sizes["heads (255 channels)" if conv.out_channels == 255 else "activated"] += out.numel() * 2

    handles = [m.register_forward_hook(hook) for m in loaded.module.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        loaded.module.eval()(torch.rand(1, 3, *loaded.input_hw))
    for h in handles:
        h.remove()
    act = sizes["activated"]
    print(f"{kind}: {act / 1e6:.1f} MB activated per item, {sizes['heads (255 channels)'] / 1e6:.2f} MB heads; "
          f"one more read and write at batch {batch}: {2 * act * batch / 1e9:.2f} GB, "
          f"{2 * act * batch / (HBM_TBPS * 1e12) * 1e3:.2f} ms at {HBM_TBPS} TB/s")
