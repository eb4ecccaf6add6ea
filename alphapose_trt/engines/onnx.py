"""ONNX export (static or dynamic batch) and an onnxruntime engine.

The graph is what TensorRT (or any ONNX runtime) consumes: input `images`, output `detections` or
`heatmaps`, opset >= 17, no custom ops. Metadata is stored as JSON in `metadata_props`.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch

from alphapose_trt.engines.base import INPUT_NAME, META_KEY, Engine, EngineMeta, example_batch
from alphapose_trt.engines.eager import meta_for, prepare_module
from alphapose_trt.errors import AlphaPoseTrtError, require
from alphapose_trt.models.load import LoadedModel

OPSET = 18
# Ops the seed's TensorRT 7 could not take, and that a clean export does not need.
FORBIDDEN_OPS = ("ScatterND", "Pad")


def export_onnx(
    model: LoadedModel, path: str | Path, batch: tuple[int, int, int] = (1, 1, 1), precision: str = "fp32"
) -> EngineMeta:
    """Export with the torch.export-based exporter; dynamic batch when batch min < max."""
    onnx = require("onnx", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export")
    meta = meta_for(model, "onnx", precision, batch)
    module = prepare_module(model, torch.device("cpu"), precision, channels_last=False)
    h, w = model.input_hw
    example = torch.rand(example_batch(batch), 3, h, w, dtype=meta.dtype)
    dynamic_shapes = None
    if meta.dynamic:
        dim = torch.export.Dim("batch", min=batch[0], max=batch[2])
        dynamic_shapes = ({0: dim},)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(raw),
                input_names=[INPUT_NAME],
                output_names=[meta.output_name],
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
        proto = onnx.load(str(raw))
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, meta.to_json()
        onnx.checker.check_model(proto)
        final = Path(tmp) / "final.onnx"
        onnx.save(proto, str(final))
        os.replace(final, path)
    return meta


def onnx_op_types(path: str | Path) -> set[str]:
    """Every op type in the graph, including inside subgraphs and local functions."""
    onnx = require("onnx", "onnx", "ONNX inspection")
    proto = onnx.load(str(path), load_external_data=False)
    ops: set[str] = set()

    def visit(graph) -> None:
        for node in graph.node:
            ops.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)

    visit(proto.graph)
    for fn in proto.functions:
        ops.update(n.op_type for n in fn.node)
    return ops


def read_onnx_meta(path: str | Path) -> EngineMeta:
    onnx = require("onnx", "onnx", "ONNX inspection")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
        raise AlphaPoseTrtError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise AlphaPoseTrtError(f"{path}: ONNX file has no alphapose-trt metadata (not exported by alphapose-trt)")
    return EngineMeta.from_json(props[META_KEY], str(path))


class OnnxEngine(Engine):
    """onnxruntime session; CUDA/TensorRT execution providers when present, else CPU."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        ort = require("onnxruntime", "onnx", "Running ONNX engines")
        meta = read_onnx_meta(path)
        super().__init__(meta, device)
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available] + providers
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        if not meta.dynamic:
            self.batch_sizes = (meta.batch[2],)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run([self.meta.output_name], {INPUT_NAME: x.detach().cpu().numpy()})
        return torch.from_numpy(out).to(self.device)

    def close(self) -> None:
        self.session = None
