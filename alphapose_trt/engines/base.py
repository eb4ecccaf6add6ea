"""The one engine interface every backend implements.

An engine takes a device tensor (B, 3, H, W) and returns a device tensor (detections or
heatmaps). It knows what it was built from (`EngineMeta`), so `infer` needs no extra flags and
refuses a mismatched engine with a clear message. Batch handling lives here, once, for all
backends: batches above the maximum are split and re-joined, and a batch size the backend cannot
run is padded up to the next size it can and trimmed back, so callers always get exactly the rows
they passed (the seed project returned stale rows from a dynamic engine).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch

from alphapose_trt import __version__
from alphapose_trt.errors import AlphaPoseTrtError

MODEL_KINDS = ("detector", "pose")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
OUTPUT_NAMES = {"detector": "detections", "pose": "heatmaps"}
INPUT_NAME = "images"
META_KEY = "alphapose_trt"  # key of the JSON metadata inside every exported file


@dataclass(frozen=True)
class EngineMeta:
    """What an engine was built from; travels inside (or beside) the engine file as JSON.

    batch: (min, opt, max). A static engine has min == opt == max.
    extra: model facts the pipeline reads instead of hard-coding them (pose: num_joints,
    pixel_mean, heatmap_hw; detector: num_classes).
    """

    model: str
    format: str
    input_hw: tuple[int, int]
    batch: tuple[int, int, int]
    precision: str
    weights_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS}, got {self.model!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"batch range must satisfy 1 <= min <= opt <= max, got {self.batch}")
        if not self.versions:
            object.__setattr__(
                self, "versions", {"alphapose_trt": __version__, "torch": torch.__version__}
            )

    @property
    def dynamic(self) -> bool:
        return self.batch[0] != self.batch[2]

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def output_name(self) -> str:
        return OUTPUT_NAMES[self.model]

    def with_(self, **changes: Any) -> "EngineMeta":
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "engine") -> "EngineMeta":
        """Parse metadata JSON (never `eval`); a broken or foreign file is a one-line error."""
        try:
            data = json.loads(text)
            data["input_hw"] = tuple(data["input_hw"])
            data["batch"] = tuple(data["batch"])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise AlphaPoseTrtError(f"{source}: engine metadata is missing or invalid ({exc})") from exc

    def describe(self) -> str:
        lo, opt, hi = self.batch
        batch = f"static batch {hi}" if not self.dynamic else f"dynamic batch {lo}:{opt}:{hi}"
        h, w = self.input_hw
        return (
            f"{self.model} engine ({self.format}, {self.precision}, {batch}, input {h}x{w}, "
            f"weights sha256 {self.weights_sha256[:12]})"
        )


class Engine:
    """Base class: subclasses implement `_run` for a batch size the backend accepts.

    `batch_sizes` lists the sizes `_run` accepts; None means any size in [min, max].
    Usable as a context manager so owned resources (sessions, streams) are released.
    """

    batch_sizes: tuple[int, ...] | None = None

    def __init__(self, meta: EngineMeta, device: torch.device | str) -> None:
        self.meta = meta
        self.device = torch.device(device)

    # -- subclass API -------------------------------------------------------------------------
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        """Release backend resources (no-op by default)."""

    def capturable(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The forward of a batch of a size in `batch_sizes`, without the engine's own CUDA graph,
        for a caller that captures it inside a larger graph (the pipeline's detector stage); None
        where the backend does not run in CUDA graphs."""
        return None

    # -- shared behaviour ---------------------------------------------------------------------
    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype `_run` takes (a TensorRT fp16 engine may still take fp32 input)."""
        return self.meta.dtype

    def check_input(self, x: torch.Tensor) -> None:
        h, w = self.meta.input_hw
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
            raise AlphaPoseTrtError(
                f"{self.meta.describe()} expects input (B, 3, {h}, {w}), got {tuple(x.shape)}"
            )

    def padded_size(self, n: int) -> int:
        """Smallest batch size the backend runs that holds n rows (n <= max batch)."""
        lo, _, hi = self.meta.batch
        if self.batch_sizes is None:
            return max(n, lo)
        return min(s for s in self.batch_sizes if s >= n)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run any number of rows: split above max batch, pad to a runnable size, trim back.

        One chunk (the usual call) skips split and join: at batch 1 this method's host time
        sits in front of the first kernel, so it is part of every synchronised call's latency.
        """
        self.check_input(x)
        return map_chunks(self._run_rows, x.to(device=self.device, dtype=self.input_dtype), self.meta.batch[2])

    def _run_rows(self, x: torch.Tensor) -> torch.Tensor:
        """`_run` on at most max batch rows, padded up to a size the backend runs."""
        n = x.shape[0]
        size = self.padded_size(n)
        return self._run(x) if size == n else self._run(pad_rows(x, size))[:n]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.meta.describe()}, device={self.device})"


def map_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int) -> torch.Tensor:
    """`fn` over chunks of at most `size` rows of `x`, joined; one chunk goes straight through
    (no split, no copying join)."""
    if x.shape[0] <= size:
        return fn(x)
    return torch.cat([fn(chunk) for chunk in torch.split(x, size)])


def pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """`x` with zero rows appended up to `size` rows: a batch size a backend or a captured graph
    runs. The caller trims the output back to the rows it passed."""
    n = x.shape[0]
    return x if n >= size else torch.cat([x, x.new_zeros(size - n, *x.shape[1:])])


def example_batch(batch: tuple[int, int, int]) -> int:
    """Batch size of the example input for torch.export: opt, but at least 2 for a dynamic
    range, since export specialises a dimension whose example value is 1."""
    lo, opt, hi = batch
    return opt if lo == hi else max(opt, 2)


def powers_of_two_up_to(n: int) -> tuple[int, ...]:
    """Batch buckets for shape-specialised backends: 1, 2, 4, ... and n itself.

    Why: a compiled graph is built per batch size; padding to a power of two bounds the number of
    builds at log2(max) while wasting at most half of one chunk.
    """
    sizes = []
    s = 1
    while s < n:
        sizes.append(s)
        s *= 2
    sizes.append(n)
    return tuple(sizes)
