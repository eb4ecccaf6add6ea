"""torch.compile engines: Inductor kernels, frozen weights, CUDA graphs, persistent caches.

This is the fast path measurable on any PyTorch GPU machine (TensorRT not required). Each batch
bucket (1, 2, 4, ..., max) is compiled once per process; the Inductor/autotune caches live on disk
(`$TORCHINDUCTOR_CACHE_DIR`, by default inside the alphapose-trt cache folder) so only the first
process pays the full build and later ones start in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch._dynamo
import torch._inductor.config as inductor_config

from alphapose_trt.engines.base import powers_of_two_up_to
from alphapose_trt.engines.eager import ModuleEngine, meta_for, prepare_module
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.models.load import LoadedModel

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def enable_persistent_cache(cache_root: Path | None = None) -> Path:
    """Point Inductor's on-disk caches at our cache folder unless the user chose one."""
    from alphapose_trt.download import cache_dir

    path = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or (cache_root or cache_dir()) / "inductor")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    return path


def _options(mode: str) -> dict:
    """Inductor options of `mode` without Inductor's own CUDA graphs.

    Why: the engine captures its own CUDA graph per batch bucket (`CudaGraphCache`), whose
    replay costs a few microseconds of host time and skips Dynamo's guards entirely; Inductor's
    CUDA graph trees added Python bookkeeping and guard checks to every call (H100, pose batch 1:
    0.49 ms of kernels, 0.78 ms per synchronised call with graph trees, 0.60 ms with own graphs).
    """
    from torch._inductor import list_mode_options

    return {**list_mode_options(mode), "triton.cudagraphs": False}


def _fused_convs(asked: bool | None, cuda: bool, precision: str) -> bool:
    """`fuse_convs` resolved: only fp16 on CUDA; by default where the cuDNN frontend is installed;
    asked for without it, a one-line error instead of a silent slow path."""
    if not (cuda and precision == "fp16"):
        return False
    from alphapose_trt.engines.cudnn_fusion import frontend  # imports Triton, which CPU-only torch lacks

    if asked is None:
        return frontend() is not None
    if asked and frontend() is None:
        raise AlphaPoseTrtError("fused convolutions need the cuDNN frontend: pip install 'alphapose-trt[cudnn]'")
    return asked


_buckets_in_process = 0  # batch buckets of every CompiledEngine built in this process


def _allow_recompiles(buckets: int) -> None:
    """Raise Dynamo's recompile limit for `buckets` more compiled batch sizes.

    Why cumulative: Dynamo keeps one cache entry per (module instance, input shape) on the model
    class's `forward`, for every engine the process built, so a fixed per-engine limit made the
    fifth two-bucket engine of one model fail with "recompile limit exceeded" (a probe that built
    several detector variants in one process, session 10).
    """
    global _buckets_in_process
    _buckets_in_process += buckets
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * _buckets_in_process)


class CompiledEngine(ModuleEngine):
    """The model under torch.compile, specialised per batch bucket.

    mode: torch.compile mode; "max-autotune" (CUDA graphs + kernel autotuning) is the default on
    CUDA and "default" on CPU, where CUDA graphs do not exist.
    fuse_rgb: on CUDA, run each model's first convolution (reading RGB) with its BatchNorm and
    activation as one Triton kernel (`rgb_conv`), which reads the input in any layout, so the
    engine no longer copies it to channels_last (H100: the detector's first layer at batch 8 took
    0.27 ms as cuDNN + epilogue, 0.10 ms as the kernel; benchmarks/README.md, session 12).
    Default: on with CUDA.
    fuse_convs: on CUDA in fp16, each other convolution with its BatchNorm, activation and residual
    join as one cuDNN kernel (`cudnn_fusion`, needs the `nvidia-cudnn-frontend` package): the
    epilogue passes over each output are gone (H100, session 14: detector batch 1 0.90 against
    1.07 ms, pose batch 64 +9 %). Default: on where the package is installed.
    """

    def __init__(
        self,
        model: LoadedModel,
        device: torch.device | str = "cuda",
        precision: str = "fp16",
        max_batch: int = 64,
        mode: str | None = None,
        batch_sizes: tuple[int, ...] | None = None,
        fuse_rgb: bool | None = None,
        fuse_convs: bool | None = None,
    ) -> None:
        device = torch.device(device)
        if mode is None:
            mode = "max-autotune" if device.type == "cuda" else "default"
        if mode not in COMPILE_MODES:
            raise ValueError(f"mode must be one of {COMPILE_MODES}, got {mode!r}")
        super().__init__(meta_for(model, "compiled", precision, (1, max_batch, max_batch)), device)
        self.batch_sizes = tuple(sorted(batch_sizes)) if batch_sizes else powers_of_two_up_to(max_batch)
        if self.batch_sizes[-1] != max_batch:
            raise ValueError(f"largest batch bucket {self.batch_sizes[-1]} must equal max_batch {max_batch}")
        enable_persistent_cache()
        # Freezing folds BatchNorm into the convolutions and treats weights as constants.
        inductor_config.freezing = True
        _allow_recompiles(len(self.batch_sizes))
        self.mode = mode
        cuda = device.type == "cuda"
        fuse_rgb = cuda if fuse_rgb is None else fuse_rgb and cuda
        self.fuse_convs = _fused_convs(fuse_convs, cuda, precision)
        self.module = prepare_module(model, device, precision, cuda, pad_convs=cuda, fuse_rgb=fuse_rgb,
                                     fuse_convs=self.fuse_convs)
        self.channels_last = cuda and not fuse_rgb
        self._compiled = torch.compile(self.module, dynamic=False, fullgraph=True, options=_options(mode))
        self._set_forward(cuda and "no-cudagraphs" not in mode and mode != "default")

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._compiled(x)

    def warmup(self) -> None:
        """Compile every batch bucket now (so the first real batch is not slow)."""
        h, w = self.meta.input_hw
        for n in self.batch_sizes:
            self._run(torch.rand(n, 3, h, w, device=self.device, dtype=self.meta.dtype))
