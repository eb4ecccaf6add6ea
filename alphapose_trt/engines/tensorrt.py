"""TensorRT engines built from our ONNX export with the TensorRT Python API (>= 10).

No pycuda, no plugins: buffers are torch tensors, tensors are bound by name, work is enqueued on
torch's current CUDA stream. The engine file is `MAGIC | uint32 length | metadata JSON | plan`, so
the metadata is readable without TensorRT (for `inspect`). TensorRT is imported lazily: nothing
else in the package needs it.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import torch

from alphapose_trt.engines.base import INPUT_NAME, Engine, EngineMeta
from alphapose_trt.engines.onnx import export_onnx
from alphapose_trt.errors import AlphaPoseTrtError, require
from alphapose_trt.models.load import LoadedModel

MAGIC = b"APTRT\x00\x01\x00"
WORKSPACE_BYTES = 4 << 30


def _trt():
    return require("tensorrt", "tensorrt", "TensorRT engines (TensorRT >= 10 with a CUDA GPU)")


def write_engine_file(path: str | Path, meta: EngineMeta, plan: bytes) -> None:
    header = meta.to_json().encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(MAGIC + struct.pack("<I", len(header)) + header + plan)
    os.replace(tmp, path)


def read_engine_file(path: str | Path) -> tuple[EngineMeta, bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise AlphaPoseTrtError(f"{path}: not an alphapose-trt TensorRT engine (bad header)")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    meta = EngineMeta.from_json(data[start : start + length], str(path))
    return meta, data[start + length :]


def export_tensorrt(
    model: LoadedModel,
    path: str | Path,
    batch: tuple[int, int, int] = (1, 1, 1),
    precision: str = "fp16",
    onnx_path: str | Path | None = None,
) -> EngineMeta:
    """ONNX export, then one optimisation profile min/opt/max on `images`, fp16 when asked."""
    trt = _trt()
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        onnx_file = Path(onnx_path or Path(tmp) / "model.onnx")
        meta = export_onnx(model, onnx_file, batch=batch, precision="fp32").with_(format="tensorrt", precision=precision)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_file.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise AlphaPoseTrtError(f"{onnx_file}: TensorRT could not parse the ONNX graph: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        h, w = model.input_hw
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, *[(b, 3, h, w) for b in batch])
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise AlphaPoseTrtError(f"{path}: TensorRT engine build failed (see the TensorRT log above)")
    write_engine_file(path, meta, bytes(plan))
    return meta


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine run on torch's current stream with torch-owned buffers."""

    def __init__(self, path: str | Path, device: torch.device | str = "cuda") -> None:
        meta, plan = read_engine_file(path)
        super().__init__(meta, device)
        if self.device.type != "cuda":
            raise AlphaPoseTrtError(f"{path}: TensorRT engines run on CUDA devices only")
        trt = _trt()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise AlphaPoseTrtError(f"{path}: TensorRT could not deserialize the engine (built by another version?)")
        self._context = self._engine.create_execution_context()
        self._dtypes = {
            name: torch.from_numpy(trt.nptype(self._engine.get_tensor_dtype(name))(0).reshape(1)).dtype
            for name in (INPUT_NAME, meta.output_name)
        }
        if not meta.dynamic:
            self.batch_sizes = (meta.batch[2],)

    @property
    def input_dtype(self) -> torch.dtype:
        return self._dtypes[INPUT_NAME]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.input_dtype).contiguous()
        ctx = self._context
        ctx.set_input_shape(INPUT_NAME, tuple(x.shape))
        out = torch.empty(tuple(ctx.get_tensor_shape(self.meta.output_name)),
                          dtype=self._dtypes[self.meta.output_name], device=self.device)
        ctx.set_tensor_address(INPUT_NAME, x.data_ptr())
        ctx.set_tensor_address(self.meta.output_name, out.data_ptr())
        if not ctx.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise AlphaPoseTrtError("TensorRT execution failed")
        return out

    def close(self) -> None:
        self._context = self._engine = self._runtime = None
