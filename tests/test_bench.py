"""Benchmarks on the CPU at tiny sizes: tables, json, speed-up arithmetic, failing backends."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from alphapose_trt import bench
from alphapose_trt.errors import AlphaPoseTrtError

TINY = ["--device", "cpu", "--iters", "2", "--warmup", "1", "--inputs", "2"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_bench_arguments(parser)
    args = parser.parse_args(argv)
    args.command_line = "alphapose-trt bench " + " ".join(argv)
    return args


def run(argv: list[str], outdir: Path) -> tuple[dict, str]:
    assert bench.run_bench(parse([*argv, "--outdir", str(outdir)])) == 0
    return json.loads((outdir / "bench.json").read_text()), (outdir / "bench.md").read_text()


def table_rows(markdown: str) -> list[list[str]]:
    """Body rows of the markdown table, split into cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads fight and a forward is 20x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    """The bench's own synthetic-weights cache, holding the pose checkpoint only."""
    folder = tmp_path_factory.mktemp("synthetic")
    bench.synthetic_weights(folder, 0, ["pose"])
    return folder


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory) -> Path:
    """A YOLOv3-SPP darknet file with default-initialised weights (speed ignores the values).

    The heads' person logit is raised so that, with conf 0, the pipeline sees person boxes (with
    default weights the person class wins only 1 anchor in 80).
    """
    from alphapose_trt.models.darknet import build_yolov3_spp, save_darknet_weights

    model = build_yolov3_spp(64)
    per_anchor = 5 + model.num_classes
    with torch.no_grad():
        for conv in model.modules():
            if isinstance(conv, torch.nn.Conv2d) and conv.out_channels == 3 * per_anchor:
                conv.bias.view(3, per_anchor)[:, 5] = 10.0
    path = tmp_path_factory.mktemp("detector") / "yolov3-spp.weights"
    save_darknet_weights(model, path)
    return path


def test_pose_bench_eager_onnx_and_unavailable_tensorrt(synthetic_dir, tmp_path):
    argv = ["--model", "pose", "--backend", "tensorrt,eager,onnx", "--batch", "2,1", "--pose-input", "64x48",
            "--synthetic-dir", str(synthetic_dir), *TINY]
    report, markdown = run(argv, tmp_path)

    keys = [(r["backend"], r["precision"], r["batch"]) for r in report["rows"]]
    assert keys == [(b, "fp32", n) for b in ("eager", "tensorrt", "onnx") for n in (1, 2)]
    rows = {(r["backend"], r["batch"]): r for r in report["rows"]}
    for backend in ("eager", "onnx"):
        for n in (1, 2):
            row = rows[backend, n]
            assert row["status"] == "ok", row["reason"]
            assert len(row["latencies_ms"]) == 2 and min(row["latencies_ms"]) > 0 and row["first_call_ms"] > 0
            assert row["throughput_items_s"] > 0 and row["build_s"] > 0 and row["tflops"] > 0
            assert row["pct_peak"] is None  # a CPU has no entry in the peak table
    assert rows["eager", 1]["latency_speedup"] == rows["eager", 2]["throughput_speedup"] == 1.0
    onnx, base = rows["onnx", 2], rows["eager", 2]
    assert onnx["latency_speedup"] == pytest.approx(base["latency_ms"] / onnx["latency_ms"])
    assert onnx["throughput_speedup"] == pytest.approx(onnx["throughput_items_s"] / base["throughput_items_s"])
    assert (tmp_path / "engines" / "pose-fp32-b1-2.onnx").is_file()
    assert all(rows["tensorrt", n]["status"] == "unavailable" and "tensorrt" in rows["tensorrt", n]["reason"]
               for n in (1, 2))
    assert report["model_info"]["input_hw"] == [64, 48]
    assert report["model_info"]["weights"].startswith("synthetic seed 0")
    assert report["environment"]["torch"] == torch.__version__
    assert f"({os.cpu_count()} CPU cores)" in report["environment"]["host"]
    assert report["command"] == f"alphapose-trt bench {' '.join(argv)} --outdir {tmp_path}"

    cells = table_rows(markdown)
    assert [c[:3] for c in cells] == [[b, p, str(n)] for b, p, n in keys]
    assert all(c[3].startswith("unavailable: ") for c in cells[2:4])
    assert float(cells[0][3]) == pytest.approx(rows["eager", 1]["latency_ms"], abs=1e-3)
    for label in ("- device:", "; host: ", "- torch:", "- date:", "- command: `alphapose-trt bench"):
        assert label in markdown
    assert "% fp16 peak" not in markdown


def test_detector_bench_with_user_weights(detector_weights, tmp_path):
    argv = ["--model", "detector", "--backend", "eager", "--batch", "1,2", "--img-size", "64",
            "--weights", str(detector_weights), *TINY]
    report, markdown = run(argv, tmp_path)

    assert [(r["backend"], r["batch"], r["status"]) for r in report["rows"]] == [("eager", 1, "ok"), ("eager", 2, "ok")]
    assert report["model_info"]["weights"] == str(detector_weights)
    assert report["model_info"]["input_hw"] == [64, 64]
    # YOLOv3-SPP: about 141 GFLOP at 608 px; every conv scales with the input area.
    assert report["model_info"]["flops_per_item"] == pytest.approx(141e9 * (64 / 608) ** 2, rel=0.02)
    assert len(table_rows(markdown)) == 2


def test_pipeline_bench_with_video(synthetic_dir, detector_weights, tmp_path, monkeypatch):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for frame in bench.make_frames(5, (96, 64), seed=1):
        writer.write(frame)
    writer.release()
    limits = []  # frames each decode-alone and video run was asked to read
    for name, limit_at in (("decode_fps", 1), ("video_pipeline_fps", 2)):  # (path, limit, ...), (pipeline, path, limit, ...)
        real = getattr(bench, name)
        monkeypatch.setattr(bench, name, lambda *a, real=real, at=limit_at: limits.append(a[at]) or real(*a))
    argv = ["--model", "pipeline", "--backend", "eager", "--batch", "2", "--frames", "3", "--video-frames", "5",
            "--frame-size", "96x64", "--img-size", "64", "--pose-input", "64x48", "--max-persons", "2", "--conf", "0.0",
            "--weights", str(detector_weights), "--synthetic-dir", str(synthetic_dir), "--video", str(video), *TINY]
    report, markdown = run(argv, tmp_path)
    assert limits == [5] * 4  # decoding alone at the start; before, during and after the eager row's video run

    reference, fast = report["rows"]
    assert (reference["backend"], fast["backend"], fast["batch"]) == ("reference", "eager", 2)
    assert reference["speedup"] == 1.0 and fast["speedup"] == pytest.approx(fast["fps"] / reference["fps"])
    for row in report["rows"]:
        assert row["status"] == "ok", row["reason"]
        assert row["fps"] > 0 and 0 < row["persons_per_frame"] <= 2  # pose NMS may merge the 2 boxes
        assert row["median_fps"] == pytest.approx(row["frames"] / len(row["batch_ms"]) / (np.median(row["batch_ms"]) / 1e3))
    assert len(fast["batch_ms"]) == 2  # 3 frames in calls of 2 and 1
    info = report["pipeline_info"]
    assert info["decode_fps"]["opencv"] > 0 and info["rss_end_mb"] > 0 and info["video_frames"] == 5
    video = fast["video"]["opencv"]
    assert len(video["decode_fps_runs"]) == 2 and video["decode_fps"] == max(video["decode_fps_runs"]) > 0
    assert video["ratio"] == pytest.approx(video["pipeline_fps"] / video["decode_fps"])
    assert "video/decode (opencv)" in markdown and len(table_rows(markdown)) == 2


def test_synthetic_weights_are_written_once(synthetic_dir):
    (path,) = bench.synthetic_weights(synthetic_dir, 0, ["pose"]).values()
    before = path.stat().st_mtime_ns
    assert bench.synthetic_weights(synthetic_dir, 0, ["pose"])["pose"] == path
    assert path.stat().st_mtime_ns == before and not list(synthetic_dir.glob("tmp*"))


def test_fastpose_flops_match_alphapose():
    from alphapose_trt.models.fastpose import FastPose

    flops = bench.count_flops(FastPose().eval(), (256, 192), torch.device("cpu"), torch.float32)
    assert flops == pytest.approx(11.8e9, rel=0.01)


def test_stopwatch_on_cpu_measures_host_time():
    watch = bench.Stopwatch(torch.device("cpu"))
    inputs = [torch.zeros(1)] * 2
    latencies = watch.latencies_ms(lambda x: time.sleep(0.02), inputs, 3)
    assert len(latencies) == 3 and all(20.0 <= t < 200.0 for t in latencies)
    assert 60.0 <= watch.total_ms(lambda x: time.sleep(0.02), inputs, 3) < 600.0


def test_summary_speedups_tflops_and_peak():
    base = bench.Row("eager", "fp32", 4, latencies_ms=[9.0, 10.0, 30.0], throughput_iters=10, throughput_ms=80.0)
    fast = bench.Row("onnx", "fp16", 4, latencies_ms=[5.0, 5.0, 6.0], throughput_iters=10, throughput_ms=20.0)
    missing = bench.Row("tensorrt", "fp16", 4, reason="no tensorrt")
    out = bench.summarize_rows([base, fast, missing], flops_per_item=10**12, peak=1000.0)
    assert out[0]["latency_speedup"] == 1.0 and out[0]["throughput_items_s"] == pytest.approx(500.0)
    assert out[1]["latency_ms"] == 5.0 and out[1]["latency_speedup"] == pytest.approx(2.0)
    assert out[1]["throughput_items_s"] == pytest.approx(2000.0) and out[1]["throughput_speedup"] == pytest.approx(4.0)
    assert out[1]["tflops"] == pytest.approx(2000.0) and out[1]["pct_peak"] == pytest.approx(200.0)
    assert out[2]["status"] == "unavailable" and "latency_ms" not in out[2]


@pytest.mark.parametrize(
    ("name", "peak"),
    [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 SXM5 80GB", 989.0), ("NVIDIA H200", 989.0),
     ("NVIDIA H100 PCIe", None), ("Tesla T4", None)],
)
def test_peak_by_device_name(name, peak):
    assert bench.peak_tflops(name) == peak


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "1,0"], "--batch sizes must be >= 1"),
        (["--batch", "1,x"], "comma list of integers"),
        (["--backend", "eager,trt"], "unknown trt"),
        (["--precision", "int8"], "unknown int8"),
        (["--pose-input", "64"], "--pose-input takes two integers"),
        (["--img-size", "320"], "--img-size does not apply to --model pose"),
        (["--weights", "y.weights"], "belongs to the detector model"),
        (["--weights", "a.pth", "--weights", "b.pth"], "a second --weights file"),
        (["--weights", "a.pth", "--cfg", "net.cfg"], "belongs to the detector model"),
        (["--model", "pipeline", "--cfg", "net.cfg"], "--cfg needs --weights"),
        (["--iters", "0"], "--iters must be >= 1"),
        (["--model", "pipeline", "--decoder", "nvdec"], "give --video too"),
        (["--model", "pipeline", "--video", __file__, "--decoder", "opencv,gpu"], "--decoder: unknown gpu"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message):
    with pytest.raises(AlphaPoseTrtError, match=message.replace("+", r"\+")):
        bench.BenchOptions.from_args(parse([*argv, "--device", "cpu"]))


def test_variants_keep_request_order():
    argv = ["--backend", "onnx,eager", "--precision", "fp32,fp16", "--device", "cpu"]
    opts = bench.BenchOptions.from_args(parse(argv))
    assert opts.variants() == [("onnx", "fp32"), ("onnx", "fp16"), ("eager", "fp32"), ("eager", "fp16")]
    assert opts.batches == bench.parse_batches(bench.DEFAULT_BATCHES["pose"])


def test_frames_are_rgb_uint8_and_differ():
    frames = bench.make_frames(2, (40, 24), seed=0)
    assert all(f.shape == (24, 40, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[1])


def test_gc_pauses_records_slow_collections_with_their_batch():
    import gc

    from alphapose_trt.bench import _gc_pauses

    pauses: list = []
    keep = [[i] for i in range(300_000)]  # enough objects for a full collection to take over 1 ms
    with _gc_pauses(lambda: 7, pauses):
        gc.collect()
    gc.collect()  # outside the block: not recorded
    assert len(pauses) == 1 and pauses[0][:2] == (7, 2) and pauses[0][2] > 1.0
    del keep


def test_random_inputs_keep_the_synthetic_detector_in_range(detector_model):
    """Bench inputs come from the synthetic weights' calibration distribution: on uniform noise the
    synthetic detector's box sizes overflowed fp16, and every probe's error against a reference was NaN."""
    from alphapose_trt.engines.eager import EagerEngine

    engine = EagerEngine(detector_model, "cpu", "fp32", max_batch=1)
    first, second = bench.random_inputs(engine, 1, 2, seed=3)
    assert first.shape == (1, 3, *detector_model.input_hw) and not torch.equal(first, second)
    assert torch.equal(first, bench.random_inputs(engine, 1, 1, seed=3)[0])  # a seed gives the same batches
    with torch.inference_mode():
        rows = engine(first)
    assert rows[..., 2:4].max() < torch.finfo(torch.float16).max / 10  # box w, h in pixels


def test_the_header_says_when_compiled_engines_fused_their_convolutions():
    """The tables of session 14 on were timed with the cuDNN frontend installed; a reader must see it."""
    note = bench._fusion_note({"cudnn_frontend": "1.32.0"})
    assert note.startswith("; cuDNN frontend 1.32.0: compiled fp16 engines fuse")
    assert bench._fusion_note({"cudnn_frontend": None}) == bench._fusion_note({}) == ""
