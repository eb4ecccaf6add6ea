"""Pre/post-processing fused into a few Triton kernels by torch.compile, on request.

Why: letterbox, crops and heatmap decode are chains of small elementwise and gather ops: eager
they cost ~1.7 ms of GPU time and ~100 kernel launches per batch of 8 1080p frames (measured on the
H100), a fifth of the whole pipeline. Compiled, each chain becomes one or two kernels that read
the uint8 frames once. The eager functions stay the reference the fused ones are tested against.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def fused(fn: F, row_args: tuple[int, ...] = ()) -> F:
    """`fn` under torch.compile, compiled on its first call (importing stays cheap).

    row_args: positions of the tensor arguments whose first dimension is a row count that changes
    every call (boxes, heatmaps). Only that dimension is dynamic, so one build serves all counts
    and no rebuild lands in the middle of a stream. Why not `dynamic=True`: it made every size
    symbolic, and "duck sizing" then tied the row count to any other dimension of equal value
    (64 heatmaps of 64x48 px); the first batch with 63 persons rebuilt decode for 3 s in the
    middle of a benchmark (H100). Other sizes (frames) start static, as torch.compile's default.
    """
    compiled: Callable | None = None

    @functools.wraps(fn)
    def run(*args, **kwargs):
        nonlocal compiled
        if compiled is None:
            compiled = torch.compile(fn, fullgraph=True)
        for i in row_args:
            torch._dynamo.maybe_mark_dynamic(args[i], 0)
        return compiled(*args, **kwargs)

    return run  # type: ignore[return-value]
