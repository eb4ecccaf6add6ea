"""Eager PyTorch engines: the fp32 reference every fast path is checked against, and fp16.

Also the base of the `compiled` backend, which wraps the same module with torch.compile.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from alphapose_trt.engines.base import Engine, EngineMeta, powers_of_two_up_to
from alphapose_trt.models.load import LoadedModel


def prepare_module(
    model: LoadedModel, device: torch.device, precision: str, channels_last: bool, pad_convs: bool = False,
    fuse_rgb: bool = False, fuse_convs: bool = False,
) -> nn.Module:
    """A deep copy of the model in eval mode on `device`, cast and laid out for inference.

    fuse_rgb: each RGB convolution with its BatchNorm and activation as one Triton kernel
    (`rgb_conv.fuse_rgb_convs`). pad_convs: the other odd channel counts made tensor-core
    friendly (`padding.pad_channels`). fuse_convs: the other convolutions with their BatchNorm,
    activation and residual joins as one cuDNN kernel each (`cudnn_fusion.fuse_convs`).
    """
    import copy

    from alphapose_trt.engines.base import PRECISIONS
    from alphapose_trt.engines.padding import pad_channels

    module = copy.deepcopy(model.module)
    if fuse_rgb:
        from alphapose_trt.engines.rgb_conv import fuse_rgb_convs

        fuse_rgb_convs(module)
    if pad_convs:
        pad_channels(module)
    if fuse_convs:
        from alphapose_trt.engines.cudnn_fusion import fuse_convs as fuse

        fuse(module)
    module = module.eval().to(device=device, dtype=PRECISIONS[precision])
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def meta_for(model: LoadedModel, fmt: str, precision: str, batch: tuple[int, int, int]) -> EngineMeta:
    return EngineMeta(
        model=model.kind,
        format=fmt,
        input_hw=model.input_hw,
        batch=batch,
        precision=precision,
        weights_sha256=model.weights_sha256,
        extra=dict(model.extra),
    )


def conv_precision(precision: str, tf32: bool):
    """cuDNN flags for a forward: an fp32 engine computes in true fp32 unless tf32 is asked for.

    Why: PyTorch lets cuDNN use TF32 (10-bit mantissa) for fp32 convolutions by default, which
    moves fp32 heatmaps by about 1e-3 relative on an H100, so an "fp32 reference" would not be one.
    Scoped to the call so no global setting changes; the other cuDNN settings pass through
    (`flags` would otherwise reset, e.g., `benchmark_limit` to 10 for the call).
    """
    b = torch.backends.cudnn
    allow = tf32 if precision == "fp32" else b.allow_tf32
    return b.flags(enabled=b.enabled, benchmark=b.benchmark, benchmark_limit=b.benchmark_limit,
                   deterministic=b.deterministic, allow_tf32=allow)


class CudaGraphCache:
    """Capture `fn` once per input shape into a CUDA graph and replay it.

    Why: at small batches a conv net is launch-bound (hundreds of kernels of a few microseconds);
    replaying a captured graph removes the per-kernel CPU launch cost. The output (a tensor or a
    tuple of them) is cloned because the next replay overwrites the graph's static output
    buffers. All shapes share one memory pool, so the buckets' intermediate buffers need not
    each have their own memory. That is safe because replays never overlap (one stream, one call
    at a time) and each replay's output is cloned right after it, in stream order: a later
    capture may place its output where an earlier one keeps intermediates, so an output must not
    outlive the next replay.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}
        self.pool: tuple[int, int] | None = None

    @staticmethod
    def key(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> tuple:
        """The graph an input of this shape, dtype and device replays."""
        return tuple(shape), dtype, device

    def __call__(self, x: torch.Tensor) -> Any:
        key = self.key(x.shape, x.dtype, x.device)
        if key not in self.graphs:
            static_in = x.clone()
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: cudnn autotuning and lazy init stay out of the graph
                    self.fn(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.pool = self.pool or torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self.pool):
                static_out = self.fn(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        if isinstance(static_out, tuple):
            return tuple(t.clone() for t in static_out)
        return static_out.clone()


class ModuleEngine(Engine):
    """What the eager and compiled engines share: `_plain` (the module's forward) under
    `conv_precision` (`_run_plain`), called directly or captured into a `CudaGraphCache`
    (`_forward`); and that forward, for a caller that captures it inside a larger graph.

    The cuDNN flags matter only while convolutions are chosen and launched, i.e. in warm-up and
    capture, so a graph replay skips them: entering them costs tens of microseconds of host
    time, which at batch 1 lands in front of the first kernel.
    """

    tf32 = False
    _forward: Callable[[torch.Tensor], torch.Tensor]

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _set_forward(self, cuda_graphs: bool) -> None:
        self._forward = CudaGraphCache(self._run_plain) if cuda_graphs else self._run_plain

    def capturable(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self._run_plain if isinstance(self._forward, CudaGraphCache) else None

    def _run_plain(self, x: torch.Tensor) -> torch.Tensor:
        with conv_precision(self.meta.precision, self.tf32):
            return self._plain(x)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)


class EagerEngine(ModuleEngine):
    """The nn.Module itself. fp32 is the reference; fp16 + channels_last is the eager fast path.

    cuda_graphs: replay captured graphs per batch bucket (powers of two up to max_batch).
    tf32: let fp32 convolutions use TF32 (PyTorch's default; off here so fp32 is exact).
    """

    def __init__(
        self,
        model: LoadedModel,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        max_batch: int = 64,
        channels_last: bool | None = None,
        cuda_graphs: bool = False,
        tf32: bool = False,
    ) -> None:
        device = torch.device(device)
        super().__init__(meta_for(model, "eager", precision, (1, max_batch, max_batch)), device)
        if channels_last is None:
            channels_last = device.type == "cuda"
        self.channels_last = channels_last
        self.tf32 = tf32
        self.module = prepare_module(model, device, precision, channels_last)
        if cuda_graphs:
            if device.type != "cuda":
                raise ValueError("cuda_graphs=True needs a CUDA device")
            self.batch_sizes = powers_of_two_up_to(max_batch)
        self._set_forward(cuda_graphs)

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x)
