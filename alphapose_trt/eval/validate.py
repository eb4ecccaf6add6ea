"""`alphapose-trt validate`: COCO val2017 keypoint AP per engine, on GT boxes and detector boxes.

GT-box mode crops every non-crowd ground-truth person through the same crop -> pose -> decode
path as the pipeline, skips pose NMS and ranks persons by their joints alone (mean + 1.25 * max).
Detector-box mode runs the whole pipeline (detector, pose, pose NMS) with the given thresholds
(AlphaPose's by default); its person score already adds the box score.

Detector boxes are cached per detector *identity* (weights hash, engine format, precision, input
size, cfg, thresholds, pipeline kind) under `OUTDIR/cache`, so a second run of the same detector
skips it, and a different detector (say the fp16 engine of the same weights) is always run: the
seed project reused one cache for every detector and so never measured its accelerated one.
Boxes always reach the pose stage through `process_batch(frames, detections=...)`, whether they
came from the cache or were detected just now, so a cache hit gives exactly the same keypoints.

`--compare A,B,...` runs several engines on the same data and prints one table, with the largest
keypoint distance between the first engine and each other one on the same boxes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from alphapose_trt.api import PoseEstimator, batched
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.eval.coco import (
    CocoImage,
    CocoKeypointDataset,
    CocoKeypointEvaluator,
    format_table,
    gt_person_score,
    max_keypoint_difference,
)
from alphapose_trt.fileio import atomic_write
from alphapose_trt.infer import add_pipeline_arguments, estimator_from_args
from alphapose_trt.io.sources import ImageSource
from alphapose_trt.pipeline.runner import PosePipeline, ReferencePipeline
from alphapose_trt.results import Person

log = logging.getLogger(__name__)

BOX_MODES = ("gt", "det")  # table order
BOXES_CHOICES = (*BOX_MODES, "both")
MODE_NAMES = {"gt": "GT boxes", "det": "detector boxes"}
COMPARE_BACKENDS = ("eager", "compiled", "reference")
COMPARE_PRECISIONS = ("fp32", "fp16")
REFERENCE_PRECISION = "fp32"
DEFAULT_OUTDIR = Path("out") / "validate"
CACHE_DIRNAME = "cache"
CACHE_VERSION = 2  # bump when the cache layout or the box post-processing changes (2: NMS drops IoU == t)
GT_BOX_SCORE = 1.0  # GT boxes carry no detector score; COCO results never use it
READ_AHEAD_IMAGES = 32  # decoded images queued ahead of the GPU stage
FAILURES_SHOWN = 10

Pipeline = PosePipeline | ReferencePipeline


# ---- engine specs (--compare) ------------------------------------------------------------------


@dataclass(frozen=True)
class EngineSpec:
    """One engine set to validate: a table label and the pipeline flags it changes."""

    label: str | None  # None: named after the engines once they are open
    overrides: dict[str, Any] = field(default_factory=dict)


def _backend_spec(text: str) -> EngineSpec:
    """`backend[:precision]` applied to the --detector/--pose weights."""
    backend, _, precision = text.partition(":")
    if backend not in COMPARE_BACKENDS:
        raise AlphaPoseTrtError(
            f"--compare: unknown backend {backend!r} in {text!r} (use {', '.join(COMPARE_BACKENDS)}, "
            "optionally :fp32 or :fp16, or DET_ENGINE+POSE_ENGINE)")
    if precision and precision not in COMPARE_PRECISIONS:
        raise AlphaPoseTrtError(f"--compare: unknown precision {precision!r} in {text!r} (use fp32 or fp16)")
    if backend == "reference":
        if precision not in ("", REFERENCE_PRECISION):
            raise AlphaPoseTrtError(f"--compare: the reference path runs fp32 only, got {text!r}")
        return EngineSpec(text, {"reference": True})
    return EngineSpec(text, {"reference": False, "backend": backend, "precision": precision or None})


def _pair_spec(text: str) -> EngineSpec:
    """`DET+POSE`: two engine (or weights) files that replace --detector and --pose."""
    detector, _, pose = text.partition("+")
    if not detector or not pose or "+" in pose:
        raise AlphaPoseTrtError(f"--compare: {text!r} must be DET_ENGINE+POSE_ENGINE, e.g. det.onnx+pose.onnx")
    return EngineSpec(text, {"reference": False, "detector": Path(detector), "pose": Path(pose)})


def parse_compare(text: str) -> list[EngineSpec]:
    """Engine specs of `--compare`, in order: `eager:fp32,compiled:fp16` or `d.onnx+p.onnx,...`."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise AlphaPoseTrtError(f"--compare: empty entry in {text!r} (a comma list of engine specs)")
    return [_pair_spec(item) if "+" in item else _backend_spec(item) for item in items]


def _unique_labels(labels: Sequence[str]) -> list[str]:
    """Labels with repeats numbered (`eager:fp32`, `eager:fp32 #2`), so rows and files differ."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def engine_label(estimator: PoseEstimator) -> str:
    """`format:precision` of the opened engines (both when they differ), or `reference`."""
    if isinstance(estimator.pipeline, ReferencePipeline):
        return "reference"
    engines = [e for e in (estimator.detector, estimator.pose) if e is not None]
    names = dict.fromkeys(f"{e.meta.format}:{e.meta.precision}" for e in engines)
    return "+".join(names)


def _slug(label: str) -> str:
    """A file-name-safe form of a table label."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-") or "engine"


# ---- GT-box mode ---------------------------------------------------------------------------------


def _with_box_scores(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) GT boxes -> (N, 5) rows x1, y1, x2, y2, score as the pipeline takes them."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes, np.full((len(boxes), 1), GT_BOX_SCORE, np.float32)], axis=1)


def _estimate_fast(
    pipeline: PosePipeline, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """PosePipeline.estimate per run of same-size frames (one upload, one batched pose call)."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    start = 0
    for _, group in groupby(frames, key=lambda f: f.shape):
        group = list(group)
        rows = boxes[start : start + len(group)]
        coords, scores = (t.cpu().numpy() for t in pipeline.estimate(pipeline.upload(group), rows))
        ends = np.cumsum([len(r) for r in rows])
        out += [(c, s) for c, s in zip(np.split(coords, ends[:-1]), np.split(scores, ends[:-1]))]
        start += len(group)
    return out


def estimate_on_boxes(
    pipeline: Pipeline, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Keypoints (N, K, 2) and joint scores (N, K) per frame for given boxes, without pose NMS.

    frames: RGB uint8 (H, W, 3); boxes: (N, 4) x1, y1, x2, y2 pixels per frame. The boxes go
    through the pipeline's own crop -> pose (+ flip) -> decode, so GT-box AP measures the same
    code the detector-box mode and `infer` run.
    """
    if len(frames) != len(boxes):
        raise ValueError(f"got {len(frames)} frames but {len(boxes)} box arrays")
    rows = [_with_box_scores(b) for b in boxes]
    with torch.inference_mode():
        if isinstance(pipeline, ReferencePipeline):
            return [pipeline.estimate(frame, dets) for frame, dets in zip(frames, rows)]
        return _estimate_fast(pipeline, frames, rows)


def gt_persons(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> list[Person]:
    """GT-box persons: one per box, scored mean + 1.25 * max of its joint scores (no box score)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    person_scores = gt_person_score(np.asarray(scores, dtype=np.float64))
    return [
        Person(
            box=np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32),
            box_score=GT_BOX_SCORE,
            keypoints=np.asarray(keypoints[i], dtype=np.float32),
            keypoint_scores=np.asarray(scores[i], dtype=np.float32),
            score=float(person_scores[i]),
            idx=i,
        )
        for i, (x1, y1, x2, y2) in enumerate(boxes)
    ]


# ---- detection cache ---------------------------------------------------------------------------


def detector_identity(pipeline: Pipeline) -> dict[str, Any]:
    """Everything that decides a detector's boxes; boxes are shared only when all of it matches.

    The weights hash alone is not enough: an fp16 or compiled engine of the same weights gives
    (slightly) different boxes, and validating it on another engine's boxes measures nothing.
    """
    detector, config = pipeline.detector, pipeline.config
    if detector is None:
        raise AlphaPoseTrtError("detector-box validation needs a detector engine")
    meta = detector.meta
    return {
        "cache_version": CACHE_VERSION,
        "weights_sha256": meta.weights_sha256,
        "format": meta.format,
        "precision": meta.precision,
        "input_hw": list(meta.input_hw),
        "model_extra": meta.extra,
        "conf": config.conf,
        "nms": config.nms,
        "max_persons": config.max_persons,
        "min_box_area": config.min_box_area,
        "pipeline": "reference" if isinstance(pipeline, ReferencePipeline) else "fast",
    }


def _identity_key(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DetectionCache:
    """Detector boxes per image id for one detector identity, as `cache/detections-<key>.json`.

    A file written for another identity (or unreadable) is ignored with a warning and replaced:
    it is a cache, so it may cost time but never correctness. `hits` / `misses` count lookups.
    """

    def __init__(self, cache_dir: Path, identity: dict[str, Any]) -> None:
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        self.path = Path(cache_dir) / f"detections-{_identity_key(identity)}.json"
        self._boxes: dict[str, np.ndarray] = self._load()
        self._dirty = False
        self.hits = self.misses = 0

    def _load(self) -> dict[str, np.ndarray]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("identity") != self.identity:
                raise ValueError("written for another detector")
            return {k: np.asarray(v, np.float32).reshape(-1, 5) for k, v in data["boxes"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: ignoring the detection cache (%s); detecting again", self.path, exc)
            return {}

    def get(self, image_id: int) -> np.ndarray | None:
        """(M, 5) boxes x1, y1, x2, y2, score of one image, or None when not cached."""
        boxes = self._boxes.get(str(image_id))
        if boxes is None:
            self.misses += 1
        else:
            self.hits += 1
        return boxes

    def put(self, image_id: int, boxes: np.ndarray) -> None:
        self._boxes[str(image_id)] = np.asarray(boxes, np.float32).reshape(-1, 5)
        self._dirty = True

    def save(self) -> None:
        """Write the cache (atomically) if boxes were added since it was read."""
        if not self._dirty:
            return
        boxes = {k: v.tolist() for k, v in self._boxes.items()}
        with atomic_write(self.path) as fh:
            json.dump({"identity": self.identity, "boxes": boxes}, fh)
        self._dirty = False


def detect_frames(pipeline: Pipeline, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The pipeline's detector boxes (M, 5) float32 per frame, on the host."""
    with torch.inference_mode():
        if isinstance(pipeline, ReferencePipeline):
            return [np.asarray(pipeline.detect(f), np.float32).reshape(-1, 5) for f in frames]
        out: list[np.ndarray] = []
        for _, group in groupby(frames, key=lambda f: f.shape):
            out += [b.numpy().reshape(-1, 5) for b in pipeline.detect(pipeline.upload(list(group)))]
        return out


def _cached_detections(pipeline: Pipeline, cache: DetectionCache, ids: Sequence[int],
                       frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Boxes per frame from the cache; frames it lacks are detected now and added."""
    found = [cache.get(i) for i in ids]
    missing = [k for k, boxes in enumerate(found) if boxes is None]
    if missing:
        for k, boxes in zip(missing, detect_frames(pipeline, [frames[k] for k in missing])):
            cache.put(ids[k], boxes)
            found[k] = boxes
    return found


# ---- one (engine, mode) pass -------------------------------------------------------------------


@dataclass
class ModeRun:
    """The outcome of one engine in one box mode: metrics, predictions and bookkeeping."""

    engine: str
    mode: str
    metrics: dict[str, float]
    results: list[dict[str, Any]]
    images: int
    failures: list[tuple[str, str]]
    seconds: float
    detections: dict[str, Any] | None = None
    max_keypoint_difference: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def row(self) -> dict[str, Any]:
        """A flat record: the table row and the metrics json of this run."""
        return {
            "engine": self.engine, "mode": self.mode, **self.metrics,
            "images": self.images, "failed_images": len(self.failures),
            "failures": [{"file": f, "reason": r} for f, r in self.failures],
            "seconds": self.seconds, "images_per_s": self.images_per_s,
            "detections": self.detections, "max_keypoint_difference": self.max_keypoint_difference,
        }


def _image_source(images: Sequence[CocoImage], desc: str) -> ImageSource:
    """The images decoded ahead on a reader thread; unreadable ones are skipped and recorded."""
    return ImageSource(desc, [im.path for im in images], [str(im.id) for im in images], READ_AHEAD_IMAGES)


def _run_mode(
    estimator: PoseEstimator, dataset: CocoKeypointDataset, evaluator: CocoKeypointEvaluator,
    label: str, mode: str, cache_dir: Path,
) -> ModeRun:
    """Predict every image of `dataset` in one box mode and score it."""
    pipeline = estimator.pipeline
    evaluator.reset()
    cache = DetectionCache(cache_dir, detector_identity(pipeline)) if mode == "det" else None
    # GT-box mode only needs the images that have GT persons (about half of val2017).
    images = [im for im in dataset if mode == "det" or len(dataset.gt_boxes(im.id))]
    source = _image_source(images, f"{label} {mode}")
    start = time.perf_counter()
    try:
        done = _predict_all(pipeline, dataset, cache, evaluator, source)
    finally:
        if cache is not None:
            cache.save()  # keep what was detected, even after Ctrl-C
    seconds = time.perf_counter() - start
    detections = None if cache is None else {"cache": str(cache.path), "cached": cache.hits, "detected": cache.misses}
    metrics = evaluator.evaluate()
    return ModeRun(label, mode, metrics, list(evaluator.results), done, list(source.failures), seconds, detections)


def _predict_all(pipeline: Pipeline, dataset: CocoKeypointDataset, cache: DetectionCache | None,
                 evaluator: CocoKeypointEvaluator, source: ImageSource) -> int:
    """Feed every readable image's persons to the evaluator, with a progress bar; images done."""
    done = 0
    with source, tqdm(total=source.length, unit="img", desc=source.name, dynamic_ncols=True) as bar:
        for chunk in batched(source, pipeline.config.det_batch):
            ids = [int(f.image_id) for f in chunk]
            for image_id, persons in zip(ids, _predict(pipeline, dataset, cache, ids, [f.image for f in chunk])):
                evaluator.process(image_id, persons)
            done += len(chunk)
            bar.update(done + len(source.failures) - bar.n)  # skipped images count as passed
        bar.update(done + len(source.failures) - bar.n)
    return done


def _predict(pipeline: Pipeline, dataset: CocoKeypointDataset, cache: DetectionCache | None,
             ids: list[int], frames: list[np.ndarray]) -> list[list[Person]]:
    """Persons per frame: GT boxes without pose NMS, or detector boxes through the pipeline."""
    if cache is None:
        boxes = [dataset.gt_boxes(i) for i in ids]
        return [gt_persons(b, *pred) for b, pred in zip(boxes, estimate_on_boxes(pipeline, frames, boxes))]
    return pipeline.process_batch(frames, _cached_detections(pipeline, cache, ids, frames))


# ---- the command -------------------------------------------------------------------------------


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `alphapose-trt validate` (model/engine/threshold flags come from infer)."""
    g = parser.add_argument_group("validation")
    g.add_argument("--coco", type=Path, required=True,
                   help="COCO folder with annotations/person_keypoints_val2017.json and val2017/")
    g.add_argument("--boxes", choices=BOXES_CHOICES, default="both",
                   help="GT person boxes, detector boxes, or both (default: both)")
    g.add_argument("--compare", metavar="SPEC[,SPEC...]",
                   help="validate several engines into one table. SPEC is BACKEND[:PRECISION] applied to "
                        "--detector/--pose (BACKEND: eager, compiled or reference; PRECISION: fp32 or fp16), "
                        "or DET+POSE engine files; e.g. 'eager:fp32,compiled:fp16' or "
                        "'eager:fp32,det.onnx+pose.onnx'. The first is the baseline of the max keypoint "
                        "difference column")
    g.add_argument("--limit", type=int, help="only the first N images (by id), for a quick run")
    g.add_argument("--outdir", type=Path, default=DEFAULT_OUTDIR,
                   help=f"results, tables and the detection cache (default: {DEFAULT_OUTDIR})")
    add_pipeline_arguments(parser)


def _modes(boxes: str) -> tuple[str, ...]:
    return BOX_MODES if boxes == "both" else (boxes,)


def _estimator(args: argparse.Namespace, spec: EngineSpec, use_detector: bool) -> PoseEstimator:
    """Open the engines of one spec: the command's flags with the spec's overrides."""
    merged = argparse.Namespace(**{**vars(args), **spec.overrides})
    return estimator_from_args(merged, use_detector=use_detector)


def _close(estimator: PoseEstimator) -> None:
    for engine in (estimator.detector, estimator.pose):
        if engine is not None:
            engine.close()


def validate_engines(
    args: argparse.Namespace, specs: Sequence[EngineSpec], dataset: CocoKeypointDataset,
) -> list[ModeRun]:
    """Run every spec in every requested box mode; one engine set is open at a time."""
    modes = _modes(args.boxes)
    evaluator = CocoKeypointEvaluator.from_dataset(dataset)
    runs: list[ModeRun] = []
    for spec in specs:
        estimator = _estimator(args, spec, use_detector="det" in modes)
        try:
            label = spec.label or engine_label(estimator)
            for mode in modes:
                run = _run_mode(estimator, dataset, evaluator, label, mode, args.outdir / CACHE_DIRNAME)
                runs.append(run)
                _report_run(run)
        finally:
            _close(estimator)
    return runs


def add_keypoint_differences(runs: Sequence[ModeRun]) -> None:
    """Max keypoint distance (px) of each engine to the first one, per mode, on shared boxes.

    GT boxes are the same for every engine; detector boxes pair persons whose boxes agree within
    half a pixel (identical when the detectors are). NaN when no person could be paired.
    """
    for mode in BOX_MODES:
        same_mode = [r for r in runs if r.mode == mode]
        for run in same_mode[1:]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # unpaired persons: expected in det mode
                    run.max_keypoint_difference = max_keypoint_difference(same_mode[0].results, run.results)
            except AlphaPoseTrtError:
                run.max_keypoint_difference = math.nan


def _report_run(run: ModeRun) -> None:
    """One line per finished run; unreadable images listed on stderr."""
    cache = ""
    if run.detections is not None:
        cache = f", detector boxes {run.detections['cached']} cached / {run.detections['detected']} detected"
    print(f"{run.engine} {MODE_NAMES[run.mode]}: AP {run.metrics['AP']:.3f} on {run.images} images "
          f"({run.images_per_s:.1f} img/s{cache})")
    if run.failures:
        print(f"  {len(run.failures)} unreadable images skipped:", file=sys.stderr)
        for what, why in run.failures[:FAILURES_SHOWN]:
            print(f"    {what}: {why}", file=sys.stderr)


def _append_column(table: str, header: str, values: Sequence[str], markdown: bool) -> str:
    """Add one right-aligned column to a `format_table` table (header, rule, one line per row)."""
    lines = table.split("\n")
    if markdown:
        cells = [f" {header} |", " ---: |", *(f" {v} |" for v in values)]
    else:
        width = max(len(header), *(len(v) for v in values))
        cells = ["  " + header.rjust(width), "  " + "-" * width, *("  " + v.rjust(width) for v in values)]
    return "\n".join(line + cell for line, cell in zip(lines, cells, strict=True))


def _difference_cell(value: float | None) -> str:
    if value is None:
        return "-"
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def results_table(runs: Sequence[ModeRun], *, markdown: bool = False, compare: bool = False) -> str:
    """format_table's AP columns plus images/s and, for --compare, the max keypoint difference."""
    table = format_table([r.row() for r in runs], markdown=markdown)
    table = _append_column(table, "img/s", [f"{r.images_per_s:.1f}" for r in runs], markdown)
    if compare:
        values = [_difference_cell(r.max_keypoint_difference) for r in runs]
        table = _append_column(table, "max kp diff (px)", values, markdown)
    return table


def write_outputs(runs: Sequence[ModeRun], outdir: Path, *, compare: bool) -> dict[str, Path]:
    """Per run: COCO results and metrics json; for all: table.txt and table.md (atomic writes)."""
    written: dict[str, Path] = {}
    for run in runs:
        stem = f"{_slug(run.engine)}_{run.mode}"
        for suffix, payload in (("keypoints", run.results), ("metrics", run.row())):
            path = outdir / f"{stem}_{suffix}.json"
            with atomic_write(path) as fh:
                json.dump(payload, fh)
            written[f"{stem}_{suffix}"] = path
    for name, markdown in (("table.txt", False), ("table.md", True)):
        path = outdir / name
        with atomic_write(path) as fh:
            fh.write(results_table(runs, markdown=markdown, compare=compare) + "\n")
        written[name] = path
    return written


def _specs(args: argparse.Namespace) -> list[EngineSpec]:
    if args.compare is None:
        return [EngineSpec(None)]
    specs = parse_compare(args.compare)
    labels = _unique_labels([s.label for s in specs])
    return [EngineSpec(label, s.overrides) for label, s in zip(labels, specs)]


def run_validate(args: argparse.Namespace) -> int:
    """`alphapose-trt validate`: 0 when every run read at least one image, else 1."""
    specs = _specs(args)  # bad --compare fails before anything is loaded
    dataset = CocoKeypointDataset(args.coco, limit=args.limit)
    runs = validate_engines(args, specs, dataset)
    compare = args.compare is not None
    if compare:
        add_keypoint_differences(runs)
    written = write_outputs(runs, args.outdir, compare=compare)
    print(results_table(runs, compare=compare))
    print(f"tables: {written['table.txt']}, {written['table.md']}")
    starved = [r for r in runs if r.images == 0 and r.failures]
    return 1 if starved else 0
