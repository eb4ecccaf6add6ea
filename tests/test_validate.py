"""`alphapose-trt validate` end to end on a tiny generated COCO split with synthetic weights.

Synthetic weights give random keypoints, so the tests check structure and invariants (one GT
result per GT person scored mean + 1.25 * max, cache hits giving identical predictions, an
engine compared with itself differing by 0 px), never AP values.

Engines are opened once per (file, settings) for the whole module: every CLI call would
otherwise reload 400 MB of synthetic weights, which dominates the CPU time of this file.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from alphapose_trt import api
from alphapose_trt.cli import main
from alphapose_trt.engines.base import EngineMeta
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.eval.coco import CocoKeypointDataset, gt_person_score
from alphapose_trt.eval.validate import (
    DetectionCache,
    detector_identity,
    parse_compare,
    results_table,
)
from alphapose_trt.io.sources import read_image
from alphapose_trt.pipeline.runner import PipelineConfig
from cocodata import make_tiny_coco
from conftest import TEST_DETECTOR_SIZE

NUM_IMAGES = 2
PERSONS_PER_IMAGE = 1
OTHER_DETECTOR_SIZE = 96  # a second detector identity: same weights, other input size
KEYPOINT_ATOL = 1e-3  # px; pose NMS of a lone person re-weights its own joints (float rounding)


@pytest.fixture(scope="module", autouse=True)
def engines_opened_once():
    """Memoise `open_engine` as the API calls it: each distinct engine is really opened once."""
    opened: dict[str, object] = {}
    real = api.open_engine

    def open_once(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in opened:
            opened[key] = real(*args, **kwargs)
        return opened[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "open_engine", open_once)
        yield opened


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_coco(tmp_path_factory.mktemp("coco"), NUM_IMAGES, PERSONS_PER_IMAGE, seed=0)


@pytest.fixture(scope="module")
def dataset(coco_root: Path) -> CocoKeypointDataset:
    return CocoKeypointDataset(coco_root)


def model_flags(weights: dict[str, Path], img_size: int = TEST_DETECTOR_SIZE) -> list[str]:
    return ["--detector", str(weights["detector"]), "--pose", str(weights["pose"]),
            "--img-size", str(img_size), "--device", "cpu", "--det-batch", "2", "--pose-batch", "8",
            "--max-persons", "1"]


def validate(coco: Path, outdir: Path, weights: dict[str, Path], *extra: str,
             img_size: int = TEST_DETECTOR_SIZE) -> int:
    return main(["validate", "--coco", str(coco), "--outdir", str(outdir),
                 *model_flags(weights, img_size), *extra])


def read_json(path: Path):
    return json.loads(path.read_text())


def flat_keypoints(results: list[dict]) -> np.ndarray:
    return np.asarray([r["keypoints"] for r in results], dtype=np.float64).reshape(len(results), -1, 3)


def assert_metric_range(metrics: dict) -> None:
    for name in ("AP", "AP50", "AP75", "AR"):
        assert math.isnan(metrics[name]) or 0.0 <= metrics[name] <= 1.0, (name, metrics[name])


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("validate")


@pytest.fixture(scope="module")
def first_run(coco_root: Path, outdir: Path, synthetic_weights: dict[str, Path]) -> int:
    """GT and detector boxes, no flip: fills the detection cache."""
    return validate(coco_root, outdir, synthetic_weights, "--boxes", "both")


def cache_files(outdir: Path) -> list[Path]:
    return sorted((outdir / "cache").glob("detections-*.json"))


def with_cache_of(source: Path, outdir: Path) -> Path:
    """A fresh output folder holding a copy of `source`'s detection cache."""
    shutil.copytree(source / "cache", outdir / "cache")
    return outdir


# ---- end to end --------------------------------------------------------------------------------


def test_gt_and_detector_modes_write_results_and_tables(first_run: int, outdir: Path,
                                                        dataset: CocoKeypointDataset) -> None:
    assert first_run == 0
    for mode, images in (("gt", NUM_IMAGES), ("det", NUM_IMAGES)):
        metrics = read_json(outdir / f"eager-fp32_{mode}_metrics.json")
        assert (metrics["engine"], metrics["mode"], metrics["images"]) == ("eager:fp32", mode, images)
        assert metrics["failed_images"] == 0
        assert_metric_range(metrics)
        for result in read_json(outdir / f"eager-fp32_{mode}_keypoints.json"):
            assert result["image_id"] in dataset.image_ids and result["category_id"] == 1
            assert len(result["keypoints"]) == 3 * 17
    text = (outdir / "table.txt").read_text().splitlines()
    assert text[0].split() == ["engine", "mode", "AP", "AP50", "AP75", "APm", "APl", "AR", "img/s"]
    assert [line.split()[:2] for line in text[2:]] == [["eager:fp32", "gt"], ["eager:fp32", "det"]]
    markdown = (outdir / "table.md").read_text().splitlines()
    assert markdown[0].startswith("| engine | mode | AP |") and markdown[1].count("---") == 9
    assert len(markdown) == 4


def test_gt_mode_scores_every_gt_person_by_its_joints(first_run: int, outdir: Path,
                                                      dataset: CocoKeypointDataset) -> None:
    results = read_json(outdir / "eager-fp32_gt_keypoints.json")
    assert len(results) == dataset.num_gt_persons == NUM_IMAGES * PERSONS_PER_IMAGE
    for result in results:
        (x1, y1, x2, y2), = dataset.gt_boxes(result["image_id"])
        np.testing.assert_allclose(result["box"], [x1, y1, x2 - x1, y2 - y1], atol=1e-4)
        scores = np.asarray(result["keypoints"][2::3])
        assert result["score"] == pytest.approx(float(gt_person_score(scores)), abs=1e-5)


def test_gt_mode_keypoints_equal_the_pipeline_on_the_same_box(
    first_run: int, outdir: Path, dataset: CocoKeypointDataset, synthetic_weights: dict[str, Path]
) -> None:
    """One GT box per image through the public pipeline (same batching as validate): pose NMS of
    a lone person keeps its joints, and its score adds exactly the box score."""
    estimator = api.PoseEstimator(detector=False, pose=synthetic_weights["pose"], device="cpu",
                                  config=PipelineConfig(det_batch=2, pose_batch=8))
    results = {r["image_id"]: r for r in read_json(outdir / "eager-fp32_gt_keypoints.json")}
    box_score = 0.5
    frames = [read_image(image.path) for image in dataset]
    boxes = [np.concatenate([dataset.gt_boxes(i), [[box_score]]], axis=1) for i in dataset.image_ids]
    for image_id, persons in zip(dataset.image_ids, estimator.process(frames, boxes), strict=True):
        (person,) = persons
        gt = flat_keypoints([results[image_id]])[0]
        np.testing.assert_allclose(person.keypoints, gt[:, :2], atol=KEYPOINT_ATOL)
        np.testing.assert_allclose(person.keypoint_scores, gt[:, 2], rtol=1e-6)
        assert person.score == pytest.approx(results[image_id]["score"] + box_score, abs=1e-5)


def test_detection_cache_is_written_then_hit_with_identical_results(
    first_run: int, coco_root: Path, outdir: Path, synthetic_weights: dict[str, Path],
    dataset: CocoKeypointDataset, tmp_path: Path,
) -> None:
    (cache,) = cache_files(outdir)
    cached = read_json(cache)
    assert sorted(int(k) for k in cached["boxes"]) == dataset.image_ids
    assert cached["identity"]["input_hw"] == [TEST_DETECTOR_SIZE, TEST_DETECTOR_SIZE]
    first_metrics = read_json(outdir / "eager-fp32_det_metrics.json")
    assert first_metrics["detections"]["detected"] == NUM_IMAGES
    assert first_metrics["detections"]["cached"] == 0
    first_results = read_json(outdir / "eager-fp32_det_keypoints.json")
    assert first_results, "the synthetic detector found nobody: the cache test would prove nothing"

    second = with_cache_of(outdir, tmp_path / "second")
    assert validate(coco_root, second, synthetic_weights, "--boxes", "det") == 0
    metrics = read_json(second / "eager-fp32_det_metrics.json")
    (second_cache,) = cache_files(second)
    assert second_cache.name == cache.name and second_cache.read_bytes() == cache.read_bytes()
    assert metrics["detections"] == {"cache": str(second_cache), "cached": NUM_IMAGES, "detected": 0}
    assert read_json(second / "eager-fp32_det_keypoints.json") == first_results
    cached_boxes = [b[:4] for boxes in cached["boxes"].values() for b in boxes]
    for result in first_results:  # every person sits on a cached detector box (xywh)
        x, y, w, h = result["box"]
        assert any(np.allclose([x, y, x + w, y + h], b, atol=1e-3) for b in cached_boxes)


@pytest.mark.filterwarnings("ignore:COCO keypoint evaluation got no predictions")  # may find nobody
def test_another_detector_gets_its_own_cache(first_run: int, coco_root: Path, outdir: Path,
                                             synthetic_weights: dict[str, Path], tmp_path: Path) -> None:
    other = with_cache_of(outdir, tmp_path / "other")
    (first_cache,) = cache_files(other)
    before = first_cache.read_bytes()
    assert validate(coco_root, other, synthetic_weights, "--boxes", "det", "--limit", "1",
                    img_size=OTHER_DETECTOR_SIZE) == 0
    metrics = read_json(other / "eager-fp32_det_metrics.json")
    assert metrics["detections"]["detected"] == 1 and metrics["detections"]["cached"] == 0
    assert len(cache_files(other)) == 2 and Path(metrics["detections"]["cache"]) in cache_files(other)
    assert Path(metrics["detections"]["cache"]) != first_cache
    assert first_cache.read_bytes() == before


def test_compare_engine_with_itself_differs_by_zero_with_flip(
    first_run: int, coco_root: Path, outdir: Path, synthetic_weights: dict[str, Path], capsys, tmp_path: Path
) -> None:
    compare_dir = tmp_path / "compare"
    rc = validate(coco_root, compare_dir, synthetic_weights, "--boxes", "gt", "--limit", "1", "--flip",
                  "--compare", "eager:fp32,eager:fp32")
    assert rc == 0
    first = read_json(compare_dir / "eager-fp32_gt_metrics.json")
    second = read_json(compare_dir / "eager-fp32-2_gt_metrics.json")
    assert first["max_keypoint_difference"] is None
    assert (second["engine"], second["max_keypoint_difference"]) == ("eager:fp32 #2", 0.0)
    assert second["AP"] == first["AP"] or math.isnan(first["AP"]) and math.isnan(second["AP"])
    table = (compare_dir / "table.txt").read_text().splitlines()
    assert table[0].split()[-5:] == ["img/s", "max", "kp", "diff", "(px)"]
    assert table[2].split()[-1] == "-" and table[3].split()[-1] == "0"
    assert "max kp diff (px)" in capsys.readouterr().out
    # --flip reached the pose stage: the same GT box gives other keypoints than without it.
    flipped = read_json(compare_dir / "eager-fp32_gt_keypoints.json")
    plain = [r for r in read_json(outdir / "eager-fp32_gt_keypoints.json") if r["image_id"] == flipped[0]["image_id"]]
    assert flipped[0]["box"] == plain[0]["box"]
    assert not np.allclose(flat_keypoints(flipped), flat_keypoints(plain))


def test_corrupt_image_is_counted_not_fatal(tmp_path: Path, synthetic_weights: dict[str, Path], capsys) -> None:
    root = make_tiny_coco(tmp_path / "coco", NUM_IMAGES, PERSONS_PER_IMAGE, seed=1)
    dataset = CocoKeypointDataset(root)
    broken = dataset.images[0].path
    broken.write_bytes(b"not a jpeg")
    outdir = tmp_path / "out"
    assert validate(root, outdir, synthetic_weights, "--boxes", "gt") == 0
    metrics = read_json(outdir / "eager-fp32_gt_metrics.json")
    assert (metrics["images"], metrics["failed_images"]) == (NUM_IMAGES - 1, 1)
    assert metrics["failures"][0]["file"] == str(broken)
    assert {r["image_id"] for r in read_json(outdir / "eager-fp32_gt_keypoints.json")} == {dataset.images[1].id}
    assert str(broken) in capsys.readouterr().err

    for image in dataset.images[1:]:
        image.path.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="no predictions"):
        assert validate(root, outdir, synthetic_weights, "--boxes", "gt") == 1  # nothing readable


# ---- user errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("breakage, message", [
    ("annotations/person_keypoints_val2017.json", "annotation file not found"),
    ("val2017", "image folder not found"),
])
def test_missing_coco_parts_are_clear_errors(tmp_path: Path, synthetic_weights: dict[str, Path], capsys,
                                             breakage: str, message: str) -> None:
    root = make_tiny_coco(tmp_path / "coco", 1, 1)
    target = root / breakage
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    assert validate(root, tmp_path / "out", synthetic_weights) == 2
    err = capsys.readouterr().err
    assert err.startswith("alphapose-trt: error: ") and message in err and str(target) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spec, message", [
    ("eager:fp8", "unknown precision"),
    ("tensorrt", "unknown backend"),
    ("eager,,compiled", "empty entry"),
    ("reference:fp16", "fp32 only"),
    ("det.onnx+", "must be DET_ENGINE"),
])
def test_bad_compare_specs(spec: str, message: str) -> None:
    with pytest.raises(AlphaPoseTrtError, match=message):
        parse_compare(spec)


def test_compare_specs_parse_to_flag_overrides() -> None:
    specs = parse_compare("eager:fp32, compiled ,reference,a.onnx+b.engine")
    assert [s.label for s in specs] == ["eager:fp32", "compiled", "reference", "a.onnx+b.engine"]
    assert specs[0].overrides == {"reference": False, "backend": "eager", "precision": "fp32"}
    assert specs[1].overrides == {"reference": False, "backend": "compiled", "precision": None}
    assert specs[2].overrides == {"reference": True}
    assert specs[3].overrides == {"reference": False, "detector": Path("a.onnx"), "pose": Path("b.engine")}


# ---- detector identity and cache ----------------------------------------------------------------


def fake_pipeline(meta: EngineMeta, config: PipelineConfig = PipelineConfig()) -> SimpleNamespace:
    return SimpleNamespace(detector=SimpleNamespace(meta=meta), config=config)


def test_every_detector_setting_changes_the_cache_file(tmp_path: Path) -> None:
    """The seed project's bug: one cache for all detectors. Any change must miss."""
    base = EngineMeta("detector", "eager", (608, 608), (1, 8, 8), "fp32", "a" * 64, {"num_classes": 80})
    variants = [
        fake_pipeline(base),
        fake_pipeline(base.with_(weights_sha256="b" * 64)),
        fake_pipeline(base.with_(format="tensorrt")),
        fake_pipeline(base.with_(format="compiled")),
        fake_pipeline(base.with_(precision="fp16")),
        fake_pipeline(base.with_(input_hw=(416, 416))),
        fake_pipeline(base.with_(extra={"num_classes": 80, "cfg": "yolov4.cfg"})),
        fake_pipeline(base, PipelineConfig(conf=0.05)),
        fake_pipeline(base, PipelineConfig(nms=0.5)),
        fake_pipeline(base, PipelineConfig(max_persons=5)),
        fake_pipeline(base, PipelineConfig(min_box_area=100.0)),
    ]
    paths = [DetectionCache(tmp_path, detector_identity(p)).path for p in variants]
    assert len(set(paths)) == len(variants)
    # Settings that do not touch the detector share its boxes.
    same = fake_pipeline(base.with_(batch=(1, 1, 1)), PipelineConfig(flip=True, pose_batch=3))
    assert DetectionCache(tmp_path, detector_identity(same)).path == paths[0]


def test_cache_round_trip_and_foreign_or_broken_files(tmp_path: Path, caplog) -> None:
    base = EngineMeta("detector", "eager", (608, 608), (1, 8, 8), "fp32", "a" * 64)
    identity = detector_identity(fake_pipeline(base))
    cache = DetectionCache(tmp_path, identity)
    boxes = np.array([[1.5, 2.25, 30.0, 40.125, 0.875]], np.float32)
    cache.put(7, boxes)
    cache.put(8, np.zeros((0, 5), np.float32))
    cache.save()
    again = DetectionCache(tmp_path, identity)
    np.testing.assert_array_equal(again.get(7), boxes)  # float32 survives json exactly
    assert again.get(8).shape == (0, 5) and again.get(9) is None
    assert (again.hits, again.misses) == (2, 1)

    data = json.loads(cache.path.read_text())
    data["identity"]["precision"] = "fp16"  # a file that claims another detector
    cache.path.write_text(json.dumps(data))
    assert DetectionCache(tmp_path, identity).get(7) is None
    cache.path.write_text("{truncated")
    assert DetectionCache(tmp_path, identity).get(7) is None
    assert "ignoring the detection cache" in caplog.text


def test_results_table_has_one_row_per_run() -> None:
    runs = [SimpleNamespace(row=lambda e=e, m=m: {"engine": e, "mode": m, **dict.fromkeys(
                ("AP", "AP50", "AP75", "APm", "APl", "AR"), 0.5)}, images_per_s=12.345,
                max_keypoint_difference=d)
            for e, m, d in (("eager:fp32", "gt", None), ("compiled:fp16", "gt", 0.25), ("x", "det", math.nan))]
    text = results_table(runs, compare=True).splitlines()
    assert [line.split()[-1] for line in text[2:]] == ["-", "0.25", "n/a"]
    assert all(line.split()[-2] == "12.3" for line in text[2:])
    markdown = results_table(runs, markdown=True, compare=True).splitlines()
    assert markdown[0].endswith("| img/s | max kp diff (px) |")
    assert markdown[3].endswith("| 12.3 | 0.25 |")
