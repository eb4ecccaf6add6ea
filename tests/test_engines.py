"""Engines on the CPU: ONNX (static/dynamic) and AOTInductor against eager fp32, batch
splitting/padding, metadata round trips and clear errors for bad engine files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alphapose_trt.cli import main
from alphapose_trt.engines import export_engine, open_engine, parse_batch, read_meta
from alphapose_trt.engines.base import EngineMeta
from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.engines.onnx import FORBIDDEN_OPS, onnx_op_types
from alphapose_trt.errors import AlphaPoseTrtError


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def inputs(model, n: int, seed: int = 0) -> torch.Tensor:
    h, w = model.input_hw
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["detector", "pose"])
def model(request, detector_model, pose_model):
    return detector_model if request.param == "detector" else pose_model


@pytest.fixture(scope="module")
def eager(model):
    return EagerEngine(model, "cpu", "fp32", max_batch=8)


@pytest.fixture(scope="module")
def onnx_files(model, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp(f"onnx-{model.kind}")
    files = {"static": out / "static.onnx", "dynamic": out / "dynamic.onnx"}
    export_engine(model, "onnx", files["static"], (2, 2, 2), "fp32")
    export_engine(model, "onnx", files["dynamic"], (1, 1, 4), "fp32")
    return files


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_onnx_graph_is_clean(onnx_files, kind):
    import onnx

    onnx.checker.check_model(str(onnx_files[kind]))
    ops = onnx_op_types(onnx_files[kind])
    assert not ops & set(FORBIDDEN_OPS), ops
    assert all("::" not in op for op in ops), f"custom-domain ops: {ops}"


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("n", [1, 3])
def test_onnx_matches_eager(onnx_files, eager, model, kind, n):
    x = inputs(model, n, seed=n)
    with open_engine(onnx_files[kind], kind=model.kind) as engine:
        out = engine(x)
    ref = eager(x)
    assert out.shape == ref.shape == (n, *ref.shape[1:])
    assert rel_err(out, ref) < 1e-4


def test_onnx_metadata_round_trip(onnx_files, model):
    meta = read_meta(onnx_files["dynamic"])
    assert meta.model == model.kind and meta.format == "onnx"
    assert meta.batch == (1, 1, 4) and meta.dynamic
    assert meta.input_hw == model.input_hw
    assert meta.weights_sha256 == model.weights_sha256
    assert EngineMeta.from_json(meta.to_json()) == meta
    static = read_meta(onnx_files["static"])
    assert static.batch == (2, 2, 2) and not static.dynamic


def test_static_engine_pads_and_trims(onnx_files, eager, model):
    """A static batch-2 engine given 3 rows runs 2 + (1 padded to 2) and returns 3 rows."""
    x = inputs(model, 3, seed=7)
    with open_engine(onnx_files["static"]) as engine:
        assert engine.batch_sizes == (2,)
        out = engine(x)
        single = engine(x[2:3])
    assert out.shape[0] == 3 and single.shape[0] == 1
    assert rel_err(out, eager(x)) < 1e-4
    assert rel_err(single, out[2:3]) < 1e-5


def test_dynamic_engine_splits_above_max(onnx_files, eager, model):
    """Max batch 4, given 5 rows: split 4 + 1, re-joined, exactly 5 rows back (no stale rows)."""
    x = inputs(model, 5, seed=11)
    with open_engine(onnx_files["dynamic"]) as engine:
        out = engine(x)
    assert out.shape[0] == 5
    assert rel_err(out[4:], eager(x[4:])) < 1e-4


def test_inspect_prints_metadata(onnx_files, model, capsys):
    assert main(["inspect", str(onnx_files["static"])]) == 0
    text = capsys.readouterr().out
    assert f"{model.kind} engine (onnx, fp32, static batch 2" in text
    assert model.weights_sha256 in text


def test_wrong_model_kind_is_a_clear_error(onnx_files, model):
    other = "pose" if model.kind == "detector" else "detector"
    with pytest.raises(AlphaPoseTrtError, match=f"is a {model.kind} engine, but a {other} engine is needed"):
        open_engine(onnx_files["static"], kind=other)


def test_wrong_input_shape_is_a_clear_error(onnx_files, model):
    with open_engine(onnx_files["dynamic"]) as engine:
        with pytest.raises(AlphaPoseTrtError, match="expects input"):
            engine(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("suffix", [".onnx", ".pt2", ".engine"])
def test_garbage_engine_file_is_a_clear_error(tmp_path, suffix, capsys):
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(b"this is not an engine")
    with pytest.raises(AlphaPoseTrtError, match="broken"):
        open_engine(bad)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alphapose-trt: error:") and str(bad) in err and len(err.splitlines()) == 1


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(AlphaPoseTrtError, match="file not found"):
        open_engine(tmp_path / "missing.onnx")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    with pytest.raises(AlphaPoseTrtError, match="unknown file type"):
        open_engine(odd)


def test_eager_engine_split_equals_single_pass(model):
    x = inputs(model, 3, seed=3)
    small = EagerEngine(model, "cpu", "fp32", max_batch=2)
    big = EagerEngine(model, "cpu", "fp32", max_batch=4)
    assert rel_err(small(x), big(x)) < 1e-5
    empty = small(x[:0])  # no rows in, no rows out, in the output's shape
    assert empty.shape == (0, *big(x[:1]).shape[1:])


def test_engines_outside_cuda_graphs_lend_no_forward_to_capture(onnx_files, eager, model):
    """Only an engine replaying its own CUDA graphs hands the pipeline its forward to capture
    (tests/test_gpu.py checks the graphs); the CPU and ONNX engines keep the op-by-op path."""
    assert eager.capturable() is None
    assert open_engine(onnx_files["dynamic"], device="cpu").capturable() is None
    for n in (1, 3, 4):
        assert eager.padded_size(n) == n  # eager runs any batch: no padding to a bucket


def test_parse_batch():
    assert parse_batch(4) == (4, 4, 4)
    assert parse_batch(None, "1:8:64") == (1, 8, 64)
    for bad in ("8:1:64", "a:b:c", "0:1:2"):
        with pytest.raises(AlphaPoseTrtError, match="--dynamic"):
            parse_batch(None, bad)
    with pytest.raises(AlphaPoseTrtError, match="--batch"):
        parse_batch(0)


def test_tensorrt_file_header_round_trip(tmp_path, model):
    """The .engine container is readable without TensorRT (for `inspect`)."""
    from alphapose_trt.engines.tensorrt import read_engine_file, write_engine_file

    meta = EngineMeta(model.kind, "tensorrt", model.input_hw, (1, 4, 8), "fp16", model.weights_sha256)
    path = tmp_path / "m.engine"
    write_engine_file(path, meta, b"PLAN-BYTES")
    assert read_engine_file(path) == (meta, b"PLAN-BYTES")
    assert read_meta(path) == meta


def test_tensorrt_missing_is_a_clear_error(tmp_path, model):
    """Without TensorRT the export says what to install (real builds: tests/test_tensorrt.py)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(AlphaPoseTrtError, match="pip install 'alphapose-trt\\[tensorrt\\]'"):
            export_engine(model, "tensorrt", tmp_path / "m.engine", (1, 1, 1), "fp16")
        return
    pytest.fail("tensorrt is installed here: run tests/test_tensorrt.py on a GPU instead")


def test_closed_stdout_pipe_ends_quietly():
    """`alphapose-trt inspect x | head` must not end in a BrokenPipeError traceback."""
    script = (
        "import sys\n"
        "from alphapose_trt import cli\n"
        "def closed_pipe(args):\n"
        "    raise BrokenPipeError\n"
        "cli._cmd_inspect = closed_pipe\n"
        "sys.exit(cli.main(['inspect', 'x.onnx']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_conv_precision_keeps_the_other_cudnn_settings():
    """The per-call flags switch TF32 only: a user's `benchmark_limit` is not reset to 10."""
    from alphapose_trt.engines.eager import conv_precision

    cudnn = torch.backends.cudnn
    before = cudnn.benchmark_limit
    cudnn.benchmark_limit = 0
    try:
        with conv_precision("fp32", tf32=False):
            assert (cudnn.benchmark_limit, cudnn.allow_tf32) == (0, False)
        assert cudnn.benchmark_limit == 0
    finally:
        cudnn.benchmark_limit = before
