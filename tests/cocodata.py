"""A tiny COCO person-keypoint split made up on the spot, for tests of the validation path.

Real val2017 is 1 GB; these few drawn images and their annotation file have the same layout
(`val2017/`, `annotations/person_keypoints_val2017.json`) and every field the evaluator reads,
plus the cases GT-box mode must leave out: a crowd annotation and a person without keypoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from alphapose_trt.skeleton import COCO_KEYPOINTS, COCO_LIMBS

IMAGE_SIZE = (640, 480)  # width, height
FIRST_IMAGE_ID = 1000
IMAGE_ID_STEP = 37  # ids with gaps, listed in reverse, so "sorted by id" is really tested
PERSON_ASPECT = 0.45  # box width / height of a standing person
SEGMENT_FILL = 0.6  # COCO's area is the segment's, smaller than the box
# Box heights: medium persons (COCO area 32^2..96^2) on even slots, large ones on odd slots,
# so APm and APl both have ground truth.
MEDIUM_HEIGHTS = (110.0, 140.0)
LARGE_HEIGHTS = (250.0, 300.0)

# A standing person in box-normalised coordinates (x, y in [0, 1]), COCO joint order.
_TEMPLATE = np.array([
    (0.50, 0.08),                # nose
    (0.46, 0.05), (0.54, 0.05),  # eyes
    (0.40, 0.07), (0.60, 0.07),  # ears
    (0.30, 0.22), (0.70, 0.22),  # shoulders
    (0.20, 0.40), (0.80, 0.40),  # elbows
    (0.15, 0.55), (0.85, 0.55),  # wrists
    (0.36, 0.55), (0.64, 0.55),  # hips
    (0.34, 0.76), (0.66, 0.76),  # knees
    (0.33, 0.96), (0.67, 0.96),  # ankles
])


def _person(rng: np.random.Generator, x: float, y: float, h: float) -> dict:
    """Box, keypoints (with some occluded and unlabelled joints) and area of one person."""
    w = PERSON_ASPECT * h
    xy = np.array([x, y]) + _TEMPLATE * (w, h) + rng.normal(0.0, 0.01 * h, size=_TEMPLATE.shape)
    vis = rng.choice([2, 1, 0], size=len(COCO_KEYPOINTS), p=[0.8, 0.1, 0.1])
    vis[5] = 2  # at least one labelled joint
    xy[vis == 0] = 0.0  # COCO writes unlabelled joints as (0, 0, 0)
    keypoints = np.concatenate([np.round(xy, 2), vis[:, None]], axis=1)
    return {
        "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
        "area": round(SEGMENT_FILL * w * h, 2),
        "keypoints": [float(v) if i % 3 < 2 else int(v) for i, v in enumerate(keypoints.reshape(-1))],
        "num_keypoints": int((vis > 0).sum()),
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }


def _draw(image: np.ndarray, person: dict) -> None:
    """Draw a stick figure for the labelled joints, so the images are not blank."""
    kp = np.asarray(person["keypoints"], dtype=np.float64).reshape(-1, 3)
    for a, b in COCO_LIMBS:
        if kp[a, 2] > 0 and kp[b, 2] > 0:
            start, end = kp[a, :2].astype(int), kp[b, :2].astype(int)
            cv2.line(image, tuple(start.tolist()), tuple(end.tolist()), (40, 40, 200), 3)
    for x, y, v in kp:
        if v > 0:
            cv2.circle(image, (int(x), int(y)), 4, (20, 180, 20), -1)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A noisy colour gradient (BGR uint8), different per image."""
    width, height = IMAGE_SIZE
    ramp = np.linspace(0.0, 1.0, width)[None, :, None]
    low, high = rng.uniform(30, 120, size=3), rng.uniform(130, 230, size=3)
    image = low + (high - low) * ramp + rng.normal(0, 8, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _image_persons(rng: np.random.Generator, count: int) -> list[dict]:
    """`count` persons side by side, alternating medium and large, fully inside the image."""
    width, height = IMAGE_SIZE
    slot = width / count
    persons = []
    for p in range(count):
        h = rng.uniform(*(LARGE_HEIGHTS if p % 2 else MEDIUM_HEIGHTS))
        h = min(h, 0.95 * slot / PERSON_ASPECT, 0.95 * height)
        x = p * slot + rng.uniform(0, slot - PERSON_ASPECT * h)
        y = rng.uniform(0, height - h)
        persons.append(_person(rng, x, y, h))
    return persons


def _crowd(rng: np.random.Generator) -> dict:
    """A crowd region that still has keypoints: only `iscrowd` may exclude it."""
    return {**_person(rng, 20.0, 20.0, 120.0), "iscrowd": 1}


def _unlabelled(rng: np.random.Generator) -> dict:
    """A person annotated without any keypoint (num_keypoints 0)."""
    person = _person(rng, 300.0, 200.0, 150.0)
    return {**person, "keypoints": [0] * (3 * len(COCO_KEYPOINTS)), "num_keypoints": 0, "iscrowd": 0}


def make_tiny_coco(root: Path, num_images: int = 3, persons_per_image: int = 2, seed: int = 0) -> Path:
    """Write `root/val2017/*.jpg` and `root/annotations/person_keypoints_val2017.json`; return root.

    Image 0 also carries a crowd annotation, the last image a person with num_keypoints 0;
    neither is drawn. Image ids are FIRST_IMAGE_ID + IMAGE_ID_STEP * i, listed in reverse.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    width, height = IMAGE_SIZE
    images, annotations = [], []
    for i in range(num_images):
        image_id = FIRST_IMAGE_ID + IMAGE_ID_STEP * i
        file_name = f"{image_id:012d}.jpg"
        persons = [{**p, "iscrowd": 0} for p in _image_persons(rng, persons_per_image)]
        image = _background(rng)
        for person in persons:
            _draw(image, person)
        cv2.imwrite(str(root / "val2017" / file_name), image)
        extras = []
        if i == 0:
            extras.append(_crowd(rng))
        if i == num_images - 1:
            extras.append(_unlabelled(rng))
        for ann in persons + extras:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": image_id, "category_id": 1})
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    data = {
        "info": {"description": "alphapose-trt tiny synthetic COCO keypoints", "year": 2024},
        "licenses": [],
        "images": images[::-1],
        "annotations": annotations,
        "categories": [{
            "supercategory": "person", "id": 1, "name": "person",
            "keypoints": list(COCO_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_LIMBS],
        }],
    }
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(data))
    return root
