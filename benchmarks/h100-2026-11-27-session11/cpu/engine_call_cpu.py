"""Host time of an engine call around a no-op engine, and of `conv_precision`, on the CPU
(microseconds per call, mean of 20,000 after 100 warm-up calls). Run from a checkout:
    PYTHONPATH=. python3 benchmarks/h100-2026-11-27-session11/cpu/engine_call_cpu.py
"""
import time

import torch

from alphapose_trt.engines.base import Engine, EngineMeta
from alphapose_trt.engines.eager import conv_precision


def per_call_us(f, n=20000):
    for _ in range(100):
        f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e6


class NoOp(Engine):
    batch_sizes = (1, 2, 4, 8)

    def _run(self, x):
        return x


def flags():
    with conv_precision("fp16", False):
        pass


x = torch.zeros(1, 3, 608, 608, dtype=torch.float16)
engine = NoOp(EngineMeta("detector", "compiled", (608, 608), (1, 8, 8), "fp16", "0" * 64), "cpu")
print(f"Engine.__call__ around a no-op engine, batch 1: {per_call_us(lambda: engine(x)):.1f} us")
print(f"conv_precision entered and left: {per_call_us(flags):.1f} us")
