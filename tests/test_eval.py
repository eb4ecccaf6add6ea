"""COCO keypoint validation: dataset reading, COCO results, metrics, compare and tables.

Everything runs on a tiny generated split (tests/cocodata.py); "perfect" predictions are the
ground truth itself, so the expected metrics are known without a model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.eval.coco import (
    METRIC_NAMES,
    TABLE_METRICS,
    CocoKeypointDataset,
    CocoKeypointEvaluator,
    format_table,
    gt_person_score,
    max_keypoint_difference,
)
from alphapose_trt.results import Person
from cocodata import FIRST_IMAGE_ID, IMAGE_ID_STEP, make_tiny_coco

NUM_IMAGES = 3
PERSONS_PER_IMAGE = 2
ANNOTATIONS = Path("annotations") / "person_keypoints_val2017.json"


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_coco(tmp_path_factory.mktemp("coco"), NUM_IMAGES, PERSONS_PER_IMAGE, seed=0)


@pytest.fixture(scope="module")
def gt(coco_root: Path) -> dict:
    return json.loads((coco_root / ANNOTATIONS).read_text())


def gt_person_annotations(gt: dict) -> list[dict]:
    """The annotations GT-box mode evaluates (non-crowd, with keypoints), file order."""
    return [a for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]


def perfect_persons(
    gt: dict, image_ids: list[int], shift: tuple[float, float] = (0.0, 0.0)
) -> dict[int, list[Person]]:
    """Predictions equal to the ground truth (optionally shifted), per image id."""
    persons: dict[int, list[Person]] = {i: [] for i in image_ids}
    for ann in gt_person_annotations(gt):
        if ann["image_id"] not in persons:
            continue
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        scores = np.where(kp[:, 2] > 0, 0.9, 0.1)
        persons[ann["image_id"]].append(Person(
            box=np.asarray(ann["bbox"], dtype=np.float64), box_score=1.0,
            keypoints=kp[:, :2] + np.asarray(shift), keypoint_scores=scores,
            score=float(gt_person_score(scores)),
        ))
    return persons


def evaluate(evaluator: CocoKeypointEvaluator, persons: dict[int, list[Person]]) -> dict[str, float]:
    evaluator.reset()
    for image_id, image_persons in persons.items():
        evaluator.process(image_id, image_persons)
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def evaluator(coco_root: Path) -> CocoKeypointEvaluator:
    return CocoKeypointEvaluator(coco_root / ANNOTATIONS)


@pytest.fixture(scope="module")
def image_ids() -> list[int]:
    return [FIRST_IMAGE_ID + IMAGE_ID_STEP * i for i in range(NUM_IMAGES)]


# ---- dataset --------------------------------------------------------------------------------


def test_dataset_lists_images_sorted_with_paths_and_sizes(coco_root: Path, gt: dict,
                                                          image_ids: list[int]) -> None:
    ds = CocoKeypointDataset(coco_root)
    assert ds.image_ids == image_ids  # the file lists them in reverse
    assert len(ds) == NUM_IMAGES
    by_id = {im["id"]: im for im in gt["images"]}
    for image in ds:
        assert image.path == coco_root / "val2017" / by_id[image.id]["file_name"]
        assert image.path.is_file()
        assert (image.width, image.height) == (by_id[image.id]["width"], by_id[image.id]["height"])


def test_gt_boxes_follow_alphapose_convention_and_skip_crowd_and_unlabelled(coco_root: Path,
                                                                           gt: dict) -> None:
    ds = CocoKeypointDataset(coco_root)
    annotations = gt["annotations"]
    assert any(a["iscrowd"] for a in annotations) and any(a["num_keypoints"] == 0 for a in annotations)
    kept = gt_person_annotations(gt)
    assert ds.num_gt_persons == len(kept) == NUM_IMAGES * PERSONS_PER_IMAGE
    for image_id in ds.image_ids:
        # Reference: inclusive pixel box x2 = x + w - 1 (all generated boxes lie inside the image).
        expected = [[x, y, x + w - 1, y + h - 1] for x, y, w, h in
                    (a["bbox"] for a in kept if a["image_id"] == image_id)]
        boxes = ds.gt_boxes(image_id)
        assert boxes.shape == (PERSONS_PER_IMAGE, 4) and boxes.dtype == np.float32
        np.testing.assert_allclose(boxes, expected, atol=1e-4)


def test_gt_boxes_are_clipped_and_empty_ones_dropped(coco_root: Path, gt: dict, tmp_path: Path) -> None:
    """Also checks the alternative annotation file argument."""
    edited = json.loads(json.dumps(gt))
    first = edited["images"][-1]  # the smallest id
    width = first["width"]
    persons = [a for a in edited["annotations"] if a["image_id"] == first["id"] and not a["iscrowd"]]
    persons[0]["bbox"] = [width - 20.0, -10.0, 100.0, 50.0]  # leaves the image right and top
    persons[1]["bbox"] = [width + 5.0, 10.0, 30.0, 30.0]  # entirely outside: nothing left
    alt = tmp_path / "edited.json"
    alt.write_text(json.dumps(edited))
    ds = CocoKeypointDataset(coco_root, annotation_file=alt)
    np.testing.assert_allclose(ds.gt_boxes(first["id"]), [[width - 20.0, 0.0, width - 1.0, 39.0]])


def test_limit_keeps_first_images_by_id(coco_root: Path, gt: dict, image_ids: list[int]) -> None:
    ds = CocoKeypointDataset(coco_root, limit=2)
    assert ds.image_ids == image_ids[:2]
    assert ds.num_gt_persons == 2 * PERSONS_PER_IMAGE
    with pytest.raises(KeyError, match=str(image_ids[2])):
        ds.gt_boxes(image_ids[2])
    limited = CocoKeypointEvaluator.from_dataset(ds)
    assert evaluate(limited, perfect_persons(gt, ds.image_ids))["AP"] == pytest.approx(1.0)
    with pytest.raises(AlphaPoseTrtError, match=str(image_ids[2])):
        limited.process(image_ids[2], [])


@pytest.mark.parametrize("limit", [0, -3, 1.5, True])
def test_bad_limit_is_an_error(coco_root: Path, limit: object) -> None:
    with pytest.raises(AlphaPoseTrtError, match="limit"):
        CocoKeypointDataset(coco_root, limit=limit)


def test_missing_annotation_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "val2017").mkdir()
    with pytest.raises(AlphaPoseTrtError, match="person_keypoints_val2017.json"):
        CocoKeypointDataset(tmp_path)


def test_missing_image_dir_is_named(coco_root: Path, tmp_path: Path) -> None:
    with pytest.raises(AlphaPoseTrtError, match="nowhere"):
        CocoKeypointDataset(coco_root, image_dir=tmp_path / "nowhere")


def test_missing_image_files_are_named_not_fatal(coco_root: Path, gt: dict, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.warns(UserWarning, match=r"not found \(3 of 3 images missing"):
        ds = CocoKeypointDataset(coco_root, image_dir=tmp_path / "images")
    assert len(ds.missing) == 3 and len(ds.images) == 3


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"images": []}', "not a COCO annotation file"),
    ('{"images": [], "annotations": [{"id": 1, "bbox": [0, 0, 1, 1]}]}', "no keypoint annotations"),
])
def test_broken_annotation_file_is_an_error(coco_root: Path, tmp_path: Path, content: str,
                                            message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(AlphaPoseTrtError, match=message):
        CocoKeypointDataset(coco_root, annotation_file=bad)


# ---- scores and metrics ---------------------------------------------------------------------


def test_gt_person_score_numpy_and_torch() -> None:
    scores = np.array([[0.2, 0.4, 0.9], [0.0, 0.0, 0.3]])
    expected = np.array([0.5 + 1.25 * 0.9, 0.1 + 1.25 * 0.3])
    np.testing.assert_allclose(gt_person_score(scores), expected, rtol=1e-12)
    from_torch = gt_person_score(torch.tensor(scores, dtype=torch.float32))
    assert isinstance(from_torch, torch.Tensor) and from_torch.shape == (2,)
    np.testing.assert_allclose(from_torch.numpy(), expected, rtol=1e-6)


def test_ground_truth_scores_ap_one(evaluator: CocoKeypointEvaluator, gt: dict, image_ids: list[int]) -> None:
    metrics = evaluate(evaluator, perfect_persons(gt, image_ids))
    assert set(metrics) == set(METRIC_NAMES)
    for name in METRIC_NAMES:  # APm and APl both have ground truth in the tiny split
        assert metrics[name] == pytest.approx(1.0), name


def test_shifted_keypoints_lower_ap_strictly(evaluator: CocoKeypointEvaluator, gt: dict,
                                             image_ids: list[int]) -> None:
    small = evaluate(evaluator, perfect_persons(gt, image_ids, shift=(2.0, 0.0)))["AP"]
    large = evaluate(evaluator, perfect_persons(gt, image_ids, shift=(8.0, 3.0)))["AP"]
    assert 1.0 > small > large >= 0.0


def test_empty_predictions_give_nan_and_warning(evaluator: CocoKeypointEvaluator) -> None:
    evaluator.reset()
    with pytest.warns(RuntimeWarning, match="no predictions"):
        metrics = evaluator.evaluate()
    assert set(metrics) == set(METRIC_NAMES) and all(math.isnan(v) for v in metrics.values())


def test_pycocotools_prints_only_when_verbose(coco_root: Path, gt: dict, image_ids: list[int],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    persons = perfect_persons(gt, image_ids)
    evaluate(CocoKeypointEvaluator(coco_root / ANNOTATIONS), persons)
    assert capsys.readouterr().out == ""
    evaluate(CocoKeypointEvaluator(coco_root / ANNOTATIONS, verbose=True), persons)
    assert "Average Precision" in capsys.readouterr().out


def test_process_rejects_unknown_image_and_wrong_joint_count(evaluator: CocoKeypointEvaluator,
                                                             gt: dict, image_ids: list[int]) -> None:
    with pytest.raises(AlphaPoseTrtError, match="image id 5"):
        evaluator.process(5, [])
    person = perfect_persons(gt, image_ids)[image_ids[0]][0]
    halpe = Person(box=person.box, box_score=1.0, keypoints=np.zeros((26, 2)),
                   keypoint_scores=np.zeros(26), score=1.0)
    with pytest.raises(AlphaPoseTrtError, match="17 joints"):
        evaluator.process(image_ids[0], [halpe])


def test_saved_results_are_coco_results_json(evaluator: CocoKeypointEvaluator, gt: dict,
                                             image_ids: list[int], tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    evaluate(evaluator, perfect_persons(gt, image_ids))
    path = tmp_path / "out" / "results.json"
    evaluator.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left
    saved = json.loads(path.read_text())
    assert len(saved) == NUM_IMAGES * PERSONS_PER_IMAGE
    for res in saved:
        assert type(res["image_id"]) is int and res["image_id"] in image_ids
        assert res["category_id"] == 1 and isinstance(res["score"], float)
        assert len(res["keypoints"]) == 51 and all(isinstance(v, float) for v in res["keypoints"])
        assert "bbox" not in res  # would make pycocotools treat the file as box results
    coco = COCO(str(Path(evaluator.annotation_file)))
    loaded = coco.loadRes(str(path))
    assert len(loaded.getAnnIds()) == len(saved)


# ---- compare and tables ---------------------------------------------------------------------


def test_max_keypoint_difference_on_known_shift(evaluator: CocoKeypointEvaluator, gt: dict,
                                                image_ids: list[int]) -> None:
    evaluator.reset()
    for image_id, persons in perfect_persons(gt, image_ids).items():
        evaluator.process(image_id, persons)
    plain = list(evaluator.results)
    evaluator.reset()
    for image_id, persons in perfect_persons(gt, image_ids, shift=(3.0, 4.0)).items():
        evaluator.process(image_id, persons)
    shifted = list(evaluator.results)
    assert max_keypoint_difference(plain, shifted) == pytest.approx(5.0, abs=1e-9)
    assert max_keypoint_difference(plain, plain) == 0.0
    # Order within an image does not matter: persons pair by box.
    assert max_keypoint_difference(plain, shifted[::-1]) == pytest.approx(5.0, abs=1e-9)

    stranger = {**shifted[0], "box": [0.0, 0.0, 1.0, 1.0]}
    with pytest.warns(RuntimeWarning, match="2 persons"):
        assert max_keypoint_difference(plain, [stranger, *shifted[1:]]) == pytest.approx(5.0, abs=1e-9)
    with pytest.raises(AlphaPoseTrtError, match="no person"):
        max_keypoint_difference(plain, [stranger])


def test_format_table_has_every_metric(evaluator: CocoKeypointEvaluator, gt: dict,
                                       image_ids: list[int]) -> None:
    metrics = evaluate(evaluator, perfect_persons(gt, image_ids, shift=(2.0, 0.0)))
    rows = [{"engine": "tensorrt-fp16", "mode": "gt-boxes", **metrics},
            {"engine": "eager", "mode": "detector", **{m: math.nan for m in METRIC_NAMES}}]
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 4 and set(lines[1]) <= {"-", " "}
    assert lines[0].split() == ["engine", "mode", *TABLE_METRICS]
    assert lines[2].split() == ["tensorrt-fp16", "gt-boxes", *(f"{metrics[m]:.3f}" for m in TABLE_METRICS)]
    assert lines[3].split() == ["eager", "detector", *(["nan"] * len(TABLE_METRICS))]
    assert len({len(line) for line in lines}) == 1  # columns aligned

    md = format_table(rows, markdown=True).splitlines()
    assert md[0] == "| engine | mode | " + " | ".join(TABLE_METRICS) + " |"
    assert md[1].count("|") == len(TABLE_METRICS) + 3 and "---:" in md[1]
    values = " | ".join(f"{metrics[m]:.3f}" for m in TABLE_METRICS)
    assert md[2] == f"| tensorrt-fp16 | gt-boxes | {values} |"

    with pytest.raises(ValueError, match="AP75"):
        format_table([{k: v for k, v in rows[0].items() if k != "AP75"}])
