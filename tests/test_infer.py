"""`alphapose-trt infer` end to end on synthetic weights: folders, videos, formats, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from alphapose_trt.cli import main
from conftest import TEST_DETECTOR_SIZE, make_frame

MAX_PERSONS = 2


@pytest.fixture(scope="module")
def model_args(synthetic_weights) -> list[str]:
    return ["--detector", str(synthetic_weights["detector"]), "--pose", str(synthetic_weights["pose"]),
            "--img-size", str(TEST_DETECTOR_SIZE), "--device", "cpu", "--max-persons", str(MAX_PERSONS),
            "--det-batch", "2"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    for name, seed in (("img2.png", 2), ("img10.png", 10), ("sub/img1.jpg", 1)):
        cv2.imwrite(str(root / name), make_frame(96, 128, seed)[:, :, ::-1])
    return root


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (128, 96))
    for i in range(5):
        writer.write(make_frame(96, 128, 100 + i)[:, :, ::-1])
    writer.release()
    return path


def run(args: list[str]) -> int:
    return main(["infer", *args])


def load_results(outdir: Path) -> list[dict]:
    return json.loads((outdir / "alphapose-results.json").read_text())


def reported_persons(out: str) -> int:
    """The person count of infer's summary line ("processed F frames, P persons, ...")."""
    line = next(l for l in out.splitlines() if l.startswith("processed"))
    return int(line.split(",")[1].split()[0])


def test_folder_to_json_and_renders(image_dir, model_args, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["--indir", str(image_dir), "--outdir", str(out), "--save-img", "--showbox", *model_args]) == 0
    records = load_results(out)
    ids = [r["image_id"] for r in records]
    assert set(ids) <= {"img2.png", "img10.png", "sub/img1.jpg"}
    # every person of every frame is a record (pose NMS may merge a frame's two boxes into one)
    assert len(records) == reported_persons(capsys.readouterr().out)
    assert 3 <= len(records) <= 3 * MAX_PERSONS
    for r in records:
        assert r["category_id"] == 1 and len(r["keypoints"]) == 17 * 3 and len(r["box"]) == 4
        assert np.isfinite(r["score"]) and isinstance(r["idx"], int)
    for name in ("img2.png", "img10.png", "sub/img1.jpg"):
        rendered = cv2.imread(str(out / "vis" / name))
        assert rendered is not None and rendered.shape == (96, 128, 3)
        assert np.abs(rendered.astype(int) - cv2.imread(str(image_dir / name)).astype(int)).max() > 0


@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_video_to_json_and_video(video, model_args, tmp_path, capsys, decoder, monkeypatch):
    from alphapose_trt.io import sources

    warmed = []  # the source's start-up runs once, before its frames are read
    real_open = sources.open_source

    def open_source(*args, **kwargs):
        source = real_open(*args, **kwargs)
        real_warm_up = source.warm_up
        source.warm_up = lambda: warmed.append(source._reader is None) or real_warm_up()
        return source

    monkeypatch.setattr(sources, "open_source", open_source)
    out = tmp_path / "out"
    assert run(["--video", str(video), "--decoder", decoder, "--outdir", str(out), "--save-video", *model_args]) == 0
    assert warmed == [True]
    records = load_results(out)
    assert sorted({r["image_id"] for r in records}) == [0, 1, 2, 3, 4]
    out_text = capsys.readouterr().out
    assert "processed 5 frames" in out_text
    assert len(records) == reported_persons(out_text) and 5 <= len(records) <= 5 * MAX_PERSONS
    rendered = cv2.VideoCapture(str(out / "clip_pose.mp4"))
    assert rendered.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert (rendered.get(cv2.CAP_PROP_FRAME_WIDTH), rendered.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (128, 96)
    assert int(rendered.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


@pytest.mark.parametrize("fmt", ["coco", "openpose"])
def test_other_formats(image_dir, model_args, tmp_path, fmt):
    out = tmp_path / fmt
    assert run(["--indir", str(image_dir), "--outdir", str(out), "--format", fmt, *model_args]) == 0
    if fmt == "coco":
        records = load_results(out)
        assert all(isinstance(r["image_id"], int) for r in records) and 3 <= len(records) <= 3 * MAX_PERSONS
    else:
        people = json.loads((out / "img2_keypoints.json").read_text())["people"]
        assert 1 <= len(people) <= MAX_PERSONS and len(people[0]["pose_keypoints_2d"]) == 18 * 3


def test_detfile_skips_the_detector(image_dir, model_args, tmp_path):
    detfile = tmp_path / "dets.json"
    detfile.write_text(json.dumps([
        {"image_id": "img2.png", "category_id": 1, "bbox": [10, 10, 40, 70], "score": 0.9},
        {"image_id": "img10.png", "category_id": 1, "bbox": [60, 5, 50, 80], "score": 0.8},
    ]))
    out = tmp_path / "out"
    assert run(["--indir", str(image_dir), "--outdir", str(out), "--detfile", str(detfile), *model_args]) == 0
    records = load_results(out)
    assert sorted(r["image_id"] for r in records) == ["img10.png", "img2.png"]
    by_id = {r["image_id"]: r for r in records}
    np.testing.assert_allclose(by_id["img2.png"]["box"], [10, 10, 40, 70], atol=1e-3)


def test_corrupt_image_is_skipped_and_listed(image_dir, model_args, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.png").write_bytes((image_dir / "img2.png").read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    assert run(["--indir", str(folder), "--outdir", str(out), *model_args]) == 0
    assert {r["image_id"] for r in load_results(out)} == {"good.png"}
    err = capsys.readouterr().err
    assert "skipped 1 unreadable inputs" in err and "broken.jpg" in err


def test_nothing_processed_is_a_failure(model_args, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"garbage")
    assert run(["--indir", str(folder), "--outdir", str(tmp_path / "out"), *model_args]) == 1
    assert load_results(tmp_path / "out") == []


@pytest.mark.parametrize("flag,make", [
    ("--image", lambda p: p / "missing.jpg"),
    ("--indir", lambda p: p),  # empty folder
    ("--video", lambda p: (p / "not_a_video.mp4").write_bytes(b"nope") and p / "not_a_video.mp4"),
])
def test_bad_inputs_are_one_line_errors(flag, make, model_args, tmp_path, capsys):
    target = make(tmp_path)
    assert run([flag, str(target), "--outdir", str(tmp_path / "out"), *model_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alphapose-trt: error:") and tmp_path.name in err[0]


def test_wrong_engine_kind_is_a_clear_error(image_dir, synthetic_weights, tmp_path, capsys):
    args = ["--indir", str(image_dir), "--outdir", str(tmp_path / "o"), "--device", "cpu",
            "--detector", str(synthetic_weights["pose"]), "--pose", str(synthetic_weights["pose"])]
    assert run(args) == 2
    assert "a detector engine is needed" in capsys.readouterr().err


def test_grayscale_and_rgba_images_are_converted(model_args, tmp_path, capsys):
    folder = tmp_path / "formats"
    folder.mkdir()
    rgb = make_frame(96, 128, 3)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(folder / "deep.png"), (rgb.astype(np.uint16) * 257)[:, :, ::-1])
    out = tmp_path / "out"
    assert run(["--indir", str(folder), "--outdir", str(out), *model_args]) == 0
    captured = capsys.readouterr()
    assert "processed 3 frames" in captured.out and "skipped" not in captured.err
    assert {r["image_id"] for r in load_results(out)} <= {"gray.png", "rgba.png", "deep.png"}


def test_python_api_single_image_and_stream(synthetic_weights, image_dir):
    from alphapose_trt.api import PoseEstimator
    from alphapose_trt.pipeline.runner import PipelineConfig

    est = PoseEstimator(detector=synthetic_weights["detector"], pose=synthetic_weights["pose"], device="cpu",
                        config=PipelineConfig(max_persons=MAX_PERSONS, det_batch=2), img_size=TEST_DETECTOR_SIZE)
    frames = [make_frame(96, 128, s) for s in (2, 10, 1)]
    single = est(frames[0])
    assert 1 <= len(single) <= MAX_PERSONS
    assert single[0].keypoints.shape == (17, 2) and single[0].keypoint_scores.shape == (17,)
    streamed = list(est.process(frames))  # two batches (2 + 1), one in flight
    assert len(streamed) == 3
    np.testing.assert_allclose(streamed[0][0].keypoints, single[0].keypoints, atol=1e-4)
    from_file = est(image_dir / "img2.png")
    assert len(from_file) >= 1


def test_cudnn_timing_is_turned_on_for_cuda_only(monkeypatch):
    """PoseEstimator runs with cudnn.benchmark on CUDA, as every benchmark was measured."""
    import torch

    from alphapose_trt.api import tune_cudnn

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    tune_cudnn(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    tune_cudnn(torch.device("cuda", 1))
    assert torch.backends.cudnn.benchmark is True
