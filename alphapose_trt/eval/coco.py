"""COCO person-keypoint validation: ground truth, COCO results, metrics and tables.

Two modes (DESIGN.md, "Validation"): GT-box mode runs the pose network on every non-crowd
ground-truth person that has keypoints and scores a person by its joints alone; detector-box
mode runs the whole pipeline and keeps the pose NMS score (which adds the box score). Either
way the predictions go through `CocoKeypointEvaluator`, which follows detectron2's evaluator
protocol (`reset / process / evaluate`) and scores with pycocotools' COCOeval 'keypoints'.

Boxes are x1, y1, x2, y2 image pixels unless a name says xywh.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..errors import AlphaPoseTrtError, require
from ..fileio import atomic_write
from ..pipeline.pose_nms import MAX_WEIGHT
from ..results import Person
from ..skeleton import COCO_OKS_SIGMAS, NUM_COCO_KEYPOINTS

DEFAULT_ANNOTATION_FILE = Path("annotations") / "person_keypoints_val2017.json"
DEFAULT_IMAGE_DIR = Path("val2017")
PERSON_CATEGORY_ID = 1

# Weight of the best joint in AlphaPose's person score (mean + 1.25 * max [+ box score]):
# the constant pose NMS uses, kept in one place.
PERSON_SCORE_MAX_WEIGHT = MAX_WEIGHT

# COCOeval.stats for iouType 'keypoints', in its order.
METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# The columns of the summary table.
TABLE_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR")


@dataclass(frozen=True)
class CocoImage:
    """One image of the annotation file: COCO id, file on disk and size in pixels."""

    id: int
    path: Path
    width: int
    height: int


def _load_annotations(path: Path) -> dict[str, Any]:
    """Read a COCO keypoint annotation file, failing with one line that names it."""
    if not path.is_file():
        raise AlphaPoseTrtError(f"{path}: COCO annotation file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AlphaPoseTrtError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise AlphaPoseTrtError(
            f"{path}: not a COCO annotation file (needs 'images' and 'annotations' lists)")
    if data["annotations"] and not any("keypoints" in ann for ann in data["annotations"]):
        raise AlphaPoseTrtError(f"{path}: has no keypoint annotations (expected person_keypoints_*.json)")
    return data


def _field(record: Mapping[str, Any], key: str, path: Path, what: str) -> Any:
    """`record[key]`, or an error naming the file and the record that lacks it."""
    try:
        return record[key]
    except KeyError:
        raise AlphaPoseTrtError(f"{path}: {what} {record.get('id', '?')} has no '{key}'") from None


def _gt_box(bbox_xywh: Sequence[float], width: int, height: int) -> tuple[float, ...] | None:
    """A COCO xywh box as AlphaPose's GT-box validation crops it, or None if it is empty.

    AlphaPose treats boxes as inclusive pixel ranges (x2 = x + w - 1) clipped to the image, and
    skips boxes that end up without area. Copying that keeps our GT-box AP comparable to its.
    """
    x, y, w, h = (float(v) for v in bbox_xywh)
    x1, x2 = np.clip([x, x + max(w - 1.0, 0.0)], 0.0, width - 1.0)
    y1, y2 = np.clip([y, y + max(h - 1.0, 0.0)], 0.0, height - 1.0)
    if x2 <= x1 or y2 <= y1:
        return None
    return float(x1), float(y1), float(x2), float(y2)


def _is_gt_person(ann: Mapping[str, Any], path: Path) -> bool:
    """A non-crowd person with at least one labelled joint: the persons GT-box mode evaluates."""
    if ann.get("category_id", PERSON_CATEGORY_ID) != PERSON_CATEGORY_ID or ann.get("iscrowd", 0):
        return False
    keypoints = _field(ann, "keypoints", path, "annotation")
    return (_field(ann, "num_keypoints", path, "annotation") > 0
            and _field(ann, "area", path, "annotation") > 0
            and any(v > 0 for v in keypoints[2::3]))


class CocoKeypointDataset:
    """The images and ground-truth person boxes of a COCO keypoint split (val2017 by default).

    coco_dir holds `annotations/person_keypoints_val2017.json` and `val2017/`; `annotation_file`
    and `image_dir` replace either. `limit` keeps the first N images by sorted id, for quick runs.
    Images are sorted by id; GT boxes keep the annotation file's order within an image.
    """

    def __init__(
        self,
        coco_dir: str | os.PathLike,
        *,
        annotation_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        limit: int | None = None,
    ) -> None:
        coco_dir = Path(coco_dir)
        self.annotation_file = Path(annotation_file or coco_dir / DEFAULT_ANNOTATION_FILE)
        self.image_dir = Path(image_dir or coco_dir / DEFAULT_IMAGE_DIR)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise AlphaPoseTrtError(f"limit must be a positive number of images, got {limit!r}")
        data = _load_annotations(self.annotation_file)
        if not self.image_dir.is_dir():
            raise AlphaPoseTrtError(f"{self.image_dir}: COCO image folder not found")
        self.images: list[CocoImage] = self._read_images(data["images"])[:limit]
        self._check_image_files()
        self._boxes = self._read_gt_boxes(data["annotations"])

    def _read_images(self, records: list[Mapping[str, Any]]) -> list[CocoImage]:
        """All images of the annotation file, sorted by id (AlphaPose's order)."""
        path = self.annotation_file
        images = [
            CocoImage(
                id=int(_field(rec, "id", path, "image")),
                path=self.image_dir / _field(rec, "file_name", path, "image"),
                width=int(_field(rec, "width", path, "image")),
                height=int(_field(rec, "height", path, "image")),
            )
            for rec in records
        ]
        return sorted(images, key=lambda im: im.id)

    def _check_image_files(self) -> None:
        """Say up front, not at image 4000, when image files are missing. Not fatal: the run
        reads what is there and reports every missing or unreadable image as skipped."""
        self.missing = [im.path for im in self.images if not im.path.is_file()]
        if self.missing:
            warnings.warn(
                f"{self.missing[0]}: image listed in {self.annotation_file} not found "
                f"({len(self.missing)} of {len(self.images)} images missing; they are skipped and counted)",
                stacklevel=3)

    def _read_gt_boxes(self, annotations: list[Mapping[str, Any]]) -> dict[int, np.ndarray]:
        """GT-box mode's person boxes per image id, (N, 4) float32 x1y1x2y2 (N may be 0)."""
        sizes = {im.id: (im.width, im.height) for im in self.images}
        per_image: dict[int, list[tuple[float, ...]]] = defaultdict(list)
        for ann in annotations:
            image_id = _field(ann, "image_id", self.annotation_file, "annotation")
            if image_id not in sizes or not _is_gt_person(ann, self.annotation_file):
                continue
            box = _gt_box(_field(ann, "bbox", self.annotation_file, "annotation"), *sizes[image_id])
            if box is not None:
                per_image[image_id].append(box)
        return {
            image_id: np.asarray(per_image[image_id], dtype=np.float32).reshape(-1, 4)
            for image_id in sizes
        }

    @property
    def image_ids(self) -> list[int]:
        """Ids of the images kept (sorted); the set the evaluator scores."""
        return [im.id for im in self.images]

    @property
    def num_gt_persons(self) -> int:
        """How many GT boxes GT-box mode will crop (for progress bars and reports)."""
        return sum(len(boxes) for boxes in self._boxes.values())

    def gt_boxes(self, image_id: int) -> np.ndarray:
        """GT-box mode's boxes of one image: (N, 4) float32 x1, y1, x2, y2 pixels."""
        try:
            return self._boxes[image_id]
        except KeyError:
            raise KeyError(f"image id {image_id} is not in this dataset ({self.annotation_file})") from None

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[CocoImage]:
        return iter(self.images)


def gt_person_score(kp_scores: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """GT-box mode person score: mean + 1.25 * max of the joint scores, (..., K) -> (...).

    GT boxes skip pose NMS and have no detector score, so only the joints rank the persons
    (AlphaPose's validate_gt does the same). Works on numpy arrays and tensors on any device.
    """
    if isinstance(kp_scores, torch.Tensor):
        return kp_scores.mean(-1) + PERSON_SCORE_MAX_WEIGHT * kp_scores.amax(-1)
    scores = np.asarray(kp_scores, dtype=np.float64)
    return scores.mean(-1) + PERSON_SCORE_MAX_WEIGHT * scores.max(-1)


def _person_result(image_id: int, person: Person) -> dict[str, Any]:
    """One person as a COCO keypoint result (plus AlphaPose's `box`, which COCOeval ignores)."""
    keypoints = np.asarray(person.keypoints, dtype=np.float64)
    scores = np.asarray(person.keypoint_scores, dtype=np.float64)
    if keypoints.shape != (NUM_COCO_KEYPOINTS, 2) or scores.shape != (NUM_COCO_KEYPOINTS,):
        raise AlphaPoseTrtError(
            f"COCO keypoint evaluation needs {NUM_COCO_KEYPOINTS} joints per person, got keypoints "
            f"{keypoints.shape} and scores {scores.shape} for image {image_id}")
    flat = np.concatenate([keypoints, scores[:, None]], axis=1).reshape(-1)
    return {
        "image_id": int(image_id),
        "category_id": PERSON_CATEGORY_ID,
        "keypoints": flat.tolist(),
        "score": float(person.score),
        "box": [float(v) for v in person.box],
    }


class CocoKeypointEvaluator:
    """Collects predictions as COCO results and scores them with COCOeval 'keypoints'.

    `image_ids` restricts scoring to those images (a `limit`ed run); by default every image of
    the annotation file counts. pycocotools' prints are swallowed unless `verbose`.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        image_ids: Sequence[int] | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        require("pycocotools", "eval", "COCO validation")
        from pycocotools.coco import COCO

        self.annotation_file = Path(annotation_file)
        self.verbose = verbose
        self._gt = COCO()
        self._gt.dataset = _load_annotations(self.annotation_file)
        with self._pycocotools_output():
            self._gt.createIndex()
        known = set(self._gt.getImgIds())
        self.image_ids = sorted(known if image_ids is None else {int(i) for i in image_ids})
        unknown = sorted(set(self.image_ids) - known)
        if unknown:
            raise AlphaPoseTrtError(f"{self.annotation_file}: has no image with id {unknown[0]}")
        self._image_id_set = set(self.image_ids)
        self.results: list[dict[str, Any]] = []

    @classmethod
    def from_dataset(cls, dataset: CocoKeypointDataset, *, verbose: bool = False) -> CocoKeypointEvaluator:
        """An evaluator over exactly the images of `dataset` (its annotation file and limit)."""
        return cls(dataset.annotation_file, dataset.image_ids, verbose=verbose)

    def _pycocotools_output(self) -> contextlib.AbstractContextManager:
        """pycocotools prints progress to stdout; keep it only when asked for."""
        return contextlib.nullcontext() if self.verbose else contextlib.redirect_stdout(io.StringIO())

    def reset(self) -> None:
        """Forget all predictions (start a new run with the same ground truth)."""
        self.results = []

    def process(self, image_id: int, persons: Sequence[Person]) -> None:
        """Add one image's persons; `person.score` is used as is (see `gt_person_score`)."""
        if int(image_id) not in self._image_id_set:
            raise AlphaPoseTrtError(
                f"image id {image_id} is not among the {len(self.image_ids)} evaluated images "
                f"of {self.annotation_file}")
        self.results.extend(_person_result(int(image_id), person) for person in persons)

    def evaluate(self) -> dict[str, float]:
        """COCO keypoint metrics as fractions; NaN where COCO has nothing to score.

        Keys: AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl. No predictions at all gives
        NaN everywhere and a warning (pycocotools would crash); an area range without ground
        truth (COCOeval's -1) is NaN too.
        """
        if not self.results:
            warnings.warn("COCO keypoint evaluation got no predictions; all metrics are NaN",
                          RuntimeWarning, stacklevel=2)
            return {name: math.nan for name in METRIC_NAMES}
        from pycocotools.cocoeval import COCOeval

        with self._pycocotools_output():
            # loadRes adds fields to the dicts it is given: hand it a copy, keep ours clean.
            predictions = self._gt.loadRes(copy.deepcopy(self.results))
            coco_eval = COCOeval(self._gt, predictions, iouType="keypoints")
            coco_eval.params.imgIds = self.image_ids
            coco_eval.params.kpt_oks_sigmas = np.asarray(COCO_OKS_SIGMAS, dtype=np.float64)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        return {name: float(v) if v >= 0 else math.nan for name, v in zip(METRIC_NAMES, coco_eval.stats)}

    def save(self, path: str | os.PathLike) -> None:
        """Write the predictions as a COCO results json (int image ids), atomically."""
        with atomic_write(path) as fh:
            json.dump(self.results, fh)


def _persons_by_image(results: Sequence[Mapping[str, Any]]) -> dict[Any, list[Mapping[str, Any]]]:
    """Results grouped per image id, keeping their order."""
    grouped: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for res in results:
        grouped[res["image_id"]].append(res)
    return grouped


def _pair_by_box(
    persons_a: list[Mapping[str, Any]], persons_b: list[Mapping[str, Any]], tolerance: float
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Pair each person of A with the first unused person of B whose box matches A's box."""
    unused = list(persons_b)
    pairs = []
    for person in persons_a:
        box = np.asarray(person["box"], dtype=np.float64)
        for j, other in enumerate(unused):
            if np.abs(np.asarray(other["box"], dtype=np.float64) - box).max() <= tolerance:
                pairs.append((person, unused.pop(j)))
                break
    return pairs


def max_keypoint_difference(
    results_a: Sequence[Mapping[str, Any]],
    results_b: Sequence[Mapping[str, Any]],
    *,
    box_tolerance: float = 0.5,
) -> float:
    """Largest keypoint distance (pixels) between two engines' results on the same boxes.

    results_*: COCO result dicts with `box` (what `CocoKeypointEvaluator.results` holds).
    Persons are paired within an image by box (first unused match within `box_tolerance`
    pixels, so identical boxes pair in order); for `validate --compare`, where both engines
    crop the same boxes. Persons left unpaired (pose NMS may keep a borderline person in one
    engine only) are reported with a warning; no pair at all is an error.
    """
    grouped_b = _persons_by_image(results_b)
    pairs = []
    for image_id, persons_a in _persons_by_image(results_a).items():
        pairs += _pair_by_box(persons_a, grouped_b.get(image_id, []), box_tolerance)
    if not pairs:
        raise AlphaPoseTrtError("compare: the two result sets share no person with the same image and box")
    unpaired = len(results_a) + len(results_b) - 2 * len(pairs)
    if unpaired:
        warnings.warn(f"compare: {unpaired} persons have no partner with the same box and were skipped",
                      RuntimeWarning, stacklevel=2)
    xy_a = _keypoint_xy([a for a, _ in pairs])
    xy_b = _keypoint_xy([b for _, b in pairs])
    return float(np.linalg.norm(xy_a - xy_b, axis=-1).max())


def _keypoint_xy(results: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(N, K, 2) joint positions of COCO result dicts (flat x, y, score lists)."""
    flat = np.asarray([res["keypoints"] for res in results], dtype=np.float64)
    return flat.reshape(len(results), -1, 3)[..., :2]


def _table_cells(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Header plus one line of strings per (engine, mode) row; metrics with 3 decimals."""
    columns = ("engine", "mode", *TABLE_METRICS)
    cells = [list(columns)]
    for row in rows:
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"table row {dict(row)} lacks {missing}")
        cells.append([str(row["engine"]), str(row["mode"]), *(f"{float(row[m]):.3f}" for m in TABLE_METRICS)])
    return cells


def format_table(rows: Sequence[Mapping[str, Any]], *, markdown: bool = False) -> str:
    """AP, AP50, AP75, APm, APl, AR per (engine, mode) row: aligned text, or markdown to save.

    Each row is a mapping with `engine`, `mode` and the metrics (e.g. `evaluate()` merged in).
    """
    cells = _table_cells(rows)
    if markdown:
        rule = ["---", "---", *("---:" for _ in TABLE_METRICS)]
        return "\n".join("| " + " | ".join(line) + " |" for line in [cells[0], rule, *cells[1:]])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    rule = ["-" * w for w in widths]
    # Names left-aligned, numbers right-aligned so the decimal points line up.
    return "\n".join(
        "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
        for line in [cells[0], rule, *cells[1:]]
    )
