"""Validation against COCO person keypoints (the engine behind `alphapose-trt validate`).

`coco.py` reads the ground truth (images and GT person boxes), turns predictions into COCO
results as they arrive, scores them with pycocotools (an optional extra) and formats tables.
"""
