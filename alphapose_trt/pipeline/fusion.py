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


def fused(fn: F, dynamic: bool | None = None) -> F:
    """`fn` under torch.compile, compiled on its first call (importing stays cheap).

    dynamic: True for functions whose row count changes every call (boxes, heatmaps): one build
    serves all counts, so no rebuild lands in the middle of a stream (measured: a mid-stream
    rebuild cost a 256-frame benchmark half a minute). None (torch's default) for frame sizes,
    which rarely change: static kernels first, dynamic ones after a second size.
    """
    compiled: Callable | None = None

    @functools.wraps(fn)
    def run(*args, **kwargs):
        nonlocal compiled
        if compiled is None:
            compiled = torch.compile(fn, fullgraph=True, dynamic=dynamic)
        return compiled(*args, **kwargs)

    return run  # type: ignore[return-value]
