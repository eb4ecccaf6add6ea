"""Engines: one interface, several backends, chosen by file suffix (or at run time for weights).

The format table below is shared by the exporter and the loader, so a new format is one row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from alphapose_trt.engines.base import Engine, EngineMeta
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.models.load import DETECTOR_SUFFIXES, POSE_SUFFIXES, LoadedModel, load_model

log = logging.getLogger(__name__)

RUNTIME_BACKENDS = ("eager", "compiled")  # built from weights at run time, no engine file


@dataclass(frozen=True)
class Format:
    suffix: str
    export: Callable[..., EngineMeta]
    open: Callable[..., Engine]
    read_meta: Callable[[Path], EngineMeta]
    device_arg: bool  # whether export takes a device (AOT packages are built for one)


def _formats() -> dict[str, Format]:
    from alphapose_trt.engines import aot, onnx, tensorrt

    return {
        "onnx": Format(".onnx", onnx.export_onnx, onnx.OnnxEngine, onnx.read_onnx_meta, False),
        "aot": Format(".pt2", aot.export_aot, aot.AotEngine, aot.read_aot_meta, True),
        "tensorrt": Format(".engine", tensorrt.export_tensorrt, tensorrt.TensorRTEngine,
                           lambda p: tensorrt.read_engine_file(p)[0], False),
    }


FORMAT_NAMES = ("onnx", "aot", "tensorrt")


def format_of(path: str | Path) -> str | None:
    """The engine format a file's suffix names, or None for a weights file."""
    suffix = Path(path).suffix.lower()
    for name, fmt in _formats().items():
        if suffix == fmt.suffix or (name == "tensorrt" and suffix == ".trt"):
            return name
    if suffix in DETECTOR_SUFFIXES + POSE_SUFFIXES:
        return None
    raise AlphaPoseTrtError(
        f"{path}: unknown file type {suffix!r} (engines: .onnx .pt2 .engine; weights: .weights .pth)"
    )


def parse_batch(batch: int | None = None, dynamic: str | None = None) -> tuple[int, int, int]:
    """`--batch N` -> (N, N, N); `--dynamic MIN:OPT:MAX` -> (MIN, OPT, MAX)."""
    if dynamic is not None:
        try:
            lo, opt, hi = (int(v) for v in dynamic.split(":"))
        except ValueError:
            raise AlphaPoseTrtError(f"--dynamic takes MIN:OPT:MAX, e.g. 1:8:64, got {dynamic!r}") from None
        if not 1 <= lo <= opt <= hi:
            raise AlphaPoseTrtError(f"--dynamic needs 1 <= MIN <= OPT <= MAX, got {dynamic!r}")
        return lo, opt, hi
    n = 1 if batch is None else int(batch)
    if n < 1:
        raise AlphaPoseTrtError(f"--batch must be >= 1, got {n}")
    return n, n, n


def export_engine(
    model: LoadedModel,
    fmt: str,
    path: str | Path,
    batch: tuple[int, int, int],
    precision: str,
    device: str | torch.device = "cpu",
) -> EngineMeta:
    """Export `model` to `path` in format `fmt`; logs the time and file size."""
    formats = _formats()
    if fmt not in formats:
        raise AlphaPoseTrtError(f"unknown format {fmt!r}; choose one of {', '.join(formats)}")
    spec = formats[fmt]
    path = Path(path)
    if path.suffix.lower() != spec.suffix:
        raise AlphaPoseTrtError(f"{path}: a {fmt} engine file must end in {spec.suffix}")
    kwargs = {"device": device} if spec.device_arg else {}
    start = time.perf_counter()
    try:
        meta = spec.export(model, path, batch=batch, precision=precision, **kwargs)
    except AlphaPoseTrtError:
        raise
    except Exception as exc:
        raise AlphaPoseTrtError(f"{path}: {fmt} export of the {model.kind} model failed: {exc}") from exc
    seconds = time.perf_counter() - start
    log.info("exported %s in %.1f s (%.1f MB)", path, seconds, path.stat().st_size / 1e6)
    return meta


def read_meta(path: str | Path) -> EngineMeta:
    """An engine file's metadata, without loading the engine (for `inspect`)."""
    path = Path(path)
    if not path.is_file():
        raise AlphaPoseTrtError(f"{path}: engine file not found")
    fmt = format_of(path)
    if fmt is None:
        raise AlphaPoseTrtError(f"{path}: this is a weights file, not an engine")
    return _formats()[fmt].read_meta(path)


def open_engine(
    path: str | Path,
    kind: str | None = None,
    backend: str = "eager",
    device: str | torch.device = "cpu",
    precision: str | None = None,
    max_batch: int = 64,
    cfg: str | Path | None = None,
    img_size: int | None = None,
) -> Engine:
    """Open an engine file by suffix, or build an eager/compiled engine from a weights file.

    kind: the model the caller needs ("detector" or "pose"); a mismatch is a clear error.
    """
    path = Path(path)
    if not path.is_file():
        raise AlphaPoseTrtError(f"{path}: file not found")
    device = torch.device(device)
    fmt = format_of(path)
    if fmt is not None:
        engine = _formats()[fmt].open(path, device=device)
    else:
        model = load_model(path, cfg, img_size)
        if backend not in RUNTIME_BACKENDS:
            raise AlphaPoseTrtError(f"--backend must be one of {RUNTIME_BACKENDS} for weights files, got {backend!r}")
        if precision is None:
            precision = "fp16" if device.type == "cuda" else "fp32"
        if backend == "eager":
            from alphapose_trt.engines.eager import EagerEngine

            engine = EagerEngine(model, device, precision, max_batch=max_batch)
        else:
            from alphapose_trt.engines.compiled import CompiledEngine

            engine = CompiledEngine(model, device, precision, max_batch=max_batch)
    if kind is not None and engine.meta.model != kind:
        raise AlphaPoseTrtError(f"{path}: is a {engine.meta.model} engine, but a {kind} engine is needed here")
    return engine
