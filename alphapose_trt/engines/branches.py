"""A darknet detector's heads on a second CUDA stream, beside the layers that follow them.

Why: at batch 1 the detector is a chain of small kernels that each occupy few of the GPU's
multiprocessors (YOLOv3-SPP at 608: the first head's 3x3 convolution 512 -> 1024 works on 19x19
pixels). Nothing after a head reads it (`Darknet.head_branches`), so it can run at the same time
as the next layers. One compiled graph runs its kernels one after the other, so the network is
cut at the heads into ranges of layers, each compiled on its own; the heads are queued on a side
stream that forks from the caller's stream and joins it before the rows are concatenated. A CUDA
graph captured around the whole forward keeps both streams (the engine's own graph, and the
pipeline's detector stage).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from alphapose_trt.models.darknet import Darknet, Route, Shortcut


class LayerRange(nn.Module):
    """Layers start .. stop - 1 of a Darknet with tensors in and out, for torch.compile:
    forward(x, *outputs it reads) -> ([x,] *outputs later layers read, *head rows).

    x (the last layer's output) is returned only when the next range reads it: a graph output
    must be written out, which a head's raw output otherwise need not be.
    """

    def __init__(
        self, model: Darknet, start: int, stop: int, reads: tuple[int, ...], gives: tuple[int, ...], returns_x: bool,
    ) -> None:
        super().__init__()
        self.model, self.start, self.stop = model, start, stop
        self.reads, self.gives, self.returns_x = reads, gives, returns_x

    def forward(self, x: Tensor, *outputs: Tensor) -> tuple[Tensor, ...]:
        kept = dict(zip(self.reads, outputs))
        x, rows = self.model.run_layers(self.start, self.stop, x, kept)
        return (x,) * self.returns_x + tuple(kept[i] for i in self.gives) + tuple(rows)


def _sources(module: nn.Module) -> list[int]:
    if isinstance(module, Route):
        return list(module.layers)
    if isinstance(module, Shortcut):
        return [module.source]
    return []


def layer_ranges(model: Darknet) -> list[tuple[LayerRange, bool]]:
    """The network cut at its head branches: (range, is a head branch), in layer order."""
    cuts, start = [], 0
    for first, last in model.head_branches():
        cuts += [(start, first, False), (first, last + 1, True)]
        start = last + 1
    cuts.append((start, len(model.module_list), False))
    cuts = [c for c in cuts if c[0] < c[1]]
    modules = model.module_list
    reads_of = [_sources(m) for m in modules]
    ranges = []
    for k, (start, stop, branch) in enumerate(cuts):
        reads = sorted({r for i in range(start, stop) for r in reads_of[i] if r < start})
        later = {r for i in range(stop, len(modules)) for r in reads_of[i]}
        gives = sorted(i for i in range(start, stop) if i in later)
        # The trunk after a head branch starts with a route; x is the only other way in.
        returns_x = not branch and stop < len(modules) and not isinstance(modules[stop], Route)
        ranges.append((LayerRange(model, start, stop, tuple(reads), tuple(gives), returns_x), branch))
    return ranges


class BranchedDarknet:
    """A Darknet's forward with its head branches on a side stream; on a CPU, one after the
    other (the same ranges and joins, so CPU tests cover them).

    compile: turns each `LayerRange` into the callable that runs it (torch.compile).
    """

    def __init__(self, model: Darknet, compile: Callable[[nn.Module], Callable[..., tuple[Tensor, ...]]]) -> None:
        self.ranges = [(compile(r), r, branch) for r, branch in layer_ranges(model)]
        self.branches = sum(branch for *_, branch in self.ranges)
        self.side: torch.cuda.Stream | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if not x.is_cuda:
            return self._run(x, None, None)
        main = torch.cuda.current_stream(x.device)
        if self.side is None:
            self.side = torch.cuda.Stream(x.device)
        return self._run(x, main, self.side)

    def _run(self, x: Tensor, main: torch.cuda.Stream | None, side: torch.cuda.Stream | None) -> Tensor:
        kept: dict[int, Tensor] = {}
        rows: list[Tensor] = []
        for fn, layers, branch in self.ranges:
            inputs = [kept[i] for i in layers.reads]
            if branch and side is not None:
                # Its inputs stay referenced (x and `kept`) until the join below is queued.
                side.wait_stream(main)
                with torch.cuda.stream(side):
                    out = fn(x, *inputs)
                for t in out:
                    t.record_stream(main)  # read by the concatenation on the main stream
            else:
                out = fn(x, *inputs)
            if layers.returns_x:
                x, out = out[0], out[1:]
            kept.update(zip(layers.gives, out))
            rows.extend(out[len(layers.gives):])
        if main is not None:
            main.wait_stream(side)
        return torch.cat(rows, dim=1)
