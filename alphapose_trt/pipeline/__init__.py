"""The data path from frames to people: detector pre/post-processing, crops, heatmap decode, pose NMS.

Each stage is a batched, device-agnostic torch function (frames, boxes and crops stay on the GPU)
with a slow cv2/numpy `*_reference` beside it that does what AlphaPose does, one image at a time;
the tests hold the fast path to its reference.
"""
