"""`alphapose-trt infer`: images, folders, lists, videos, webcams and streams to JSON and renders.

The GPU stage runs on the main thread; decoding runs on the source's reader thread and all
writing/rendering on an `AsyncSink` thread, so the GPU never waits for either. Every frame is
accounted for: unreadable inputs are listed at the end, and results written so far are flushed
on Ctrl-C. The exit code is non-zero only when nothing could be processed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alphapose_trt.api import PoseEstimator, batched
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.io.sources import DECODERS
from alphapose_trt.pipeline import detect as detect_ops
from alphapose_trt.pipeline.runner import PipelineConfig
from alphapose_trt.results import FrameResult

DEFAULT_VIDEO_FPS = 25.0  # for --save-video when a live input reports no frame rate


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """Model, engine and threshold flags shared by infer, validate and bench."""
    g = p.add_argument_group("models and engines")
    g.add_argument("--detector", type=Path, help="detector engine or .weights (default: downloaded YOLOv3-SPP)")
    g.add_argument("--pose", type=Path, help="pose engine or .pth (default: downloaded FastPose-R50)")
    g.add_argument("--detector-cfg", type=Path, help="darknet cfg for a .weights file (default: built-in YOLOv3-SPP)")
    g.add_argument("--pose-cfg", type=Path, help="AlphaPose yaml for a .pth file (default: FastPose-R50 256x192)")
    g.add_argument("--img-size", type=int, help="detector input size for .weights files (default 608)")
    g.add_argument("--backend", choices=("eager", "compiled"), default="eager", help="how weights files run")
    g.add_argument("--precision", choices=("fp32", "fp16"), help="for weights files (default: fp16 on cuda, fp32 on cpu)")
    g.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when present)")
    g.add_argument("--reference", action="store_true", help="AlphaPose-style slow path (cv2 crops, numpy, eager fp32)")
    g = p.add_argument_group("pipeline")
    g.add_argument("--conf", type=float, default=detect_ops.CONF_THRESHOLD, help="detector objectness threshold")
    g.add_argument("--nms", type=float, default=detect_ops.NMS_THRESHOLD, help="detector NMS IoU threshold")
    g.add_argument("--max-persons", type=int, help="keep at most K boxes per frame (highest scores)")
    g.add_argument("--min-box-area", type=float, default=0.0, help="drop smaller detector boxes (px^2)")
    g.add_argument("--flip", action="store_true", help="flip test (pose on mirrored crops too)")
    g.add_argument("--det-batch", type=int, default=8, help="frames per detector call")
    g.add_argument("--pose-batch", type=int, default=64, help="crops per pose call")


def estimator_from_args(args: argparse.Namespace, use_detector: bool = True) -> PoseEstimator:
    for name in ("det_batch", "pose_batch"):
        if getattr(args, name) < 1:
            raise AlphaPoseTrtError(f"--{name.replace('_', '-')} must be >= 1")
    config = PipelineConfig(
        conf=args.conf, nms=args.nms, max_persons=args.max_persons, min_box_area=args.min_box_area,
        flip=args.flip, det_batch=args.det_batch, pose_batch=args.pose_batch,
    )
    return PoseEstimator(
        detector=args.detector if use_detector else False, pose=args.pose, device=args.device,
        backend=args.backend, precision=args.precision, config=config, reference=args.reference,
        detector_cfg=args.detector_cfg, pose_cfg=args.pose_cfg, img_size=args.img_size,
    )


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="one image file")
    src.add_argument("--indir", type=Path, help="folder of images (recursive, natural sort)")
    src.add_argument("--list", dest="list_file", type=Path, help="text file of image paths")
    src.add_argument("--video", type=Path, help="video file")
    src.add_argument("--webcam", type=int, help="webcam index")
    src.add_argument("--stream", help="stream URL (rtsp://, http://, ...)")
    p.add_argument("--decoder", choices=DECODERS, default="opencv",
                   help="video decoding: opencv (host, AlphaPose's), pyav (FFmpeg on the host, colours converted "
                        "on the --device; needs the pyav extra) or nvdec (on the GPU, frames stay there; needs the "
                        "nvdec extra)")
    add_pipeline_arguments(p)
    g = p.add_argument_group("outputs")
    g.add_argument("--outdir", type=Path, default=Path("out"), help="output folder (default: out)")
    g.add_argument("--format", choices=("alphapose", "coco", "openpose"), default="alphapose")
    g.add_argument("--detfile", type=Path, help="COCO-style detection json: skip the detector")
    g.add_argument("--save-img", action="store_true", help="save rendered images into OUTDIR/vis")
    g.add_argument("--save-video", action="store_true", help="save a rendered video (keeps fps and size)")
    g.add_argument("--showbox", action="store_true", help="draw detector boxes too")
    g.add_argument("--vis", action="store_true", help="show a live window (needs a display)")


def load_detfile(path: Path) -> dict[str, np.ndarray]:
    """Boxes (M, 5) x1 y1 x2 y2 score per image id (as a string) from a COCO detection json."""
    try:
        records = json.loads(Path(path).read_text())
        grouped: dict[str, list] = {}
        for r in records:
            if int(r.get("category_id", 1)) != 1:
                continue
            x, y, w, h = (float(v) for v in r["bbox"])
            grouped.setdefault(str(r["image_id"]), []).append([x, y, x + w, y + h, float(r["score"])])
    except FileNotFoundError:
        raise AlphaPoseTrtError(f"{path}: detection file not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AlphaPoseTrtError(f"{path}: not a COCO detection json (list of image_id/bbox/score): {exc}") from exc
    return {k: np.asarray(v, np.float32) for k, v in grouped.items()}


def _detections_for(frame, detfile: dict[str, np.ndarray]) -> np.ndarray:
    keys = [str(frame.image_id)]
    if frame.path is not None:
        keys += [frame.path.name, frame.path.stem, str(int(frame.path.stem)) if frame.path.stem.isdigit() else ""]
    for key in keys:
        if key in detfile:
            return detfile[key]
    return np.zeros((0, 5), np.float32)


class LiveView:
    """A cv2 window showing rendered frames (--vis); needs a display and non-headless OpenCV."""

    def __init__(self) -> None:
        import os

        import cv2

        if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
            raise AlphaPoseTrtError("--vis needs a display (DISPLAY is not set)")
        try:
            cv2.namedWindow("alphapose-trt", cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise AlphaPoseTrtError("--vis needs OpenCV with GUI support (pip install opencv-python)") from exc
        self.cv2 = cv2

    def write(self, image_rgb: np.ndarray) -> None:
        self.cv2.imshow("alphapose-trt", image_rgb[:, :, ::-1])
        self.cv2.waitKey(1)

    def close(self) -> None:
        self.cv2.destroyAllWindows()


def run_infer(args: argparse.Namespace) -> int:
    from alphapose_trt.io.sinks import AlphaPoseJsonWriter, AsyncSink, FrameOutputs, ImageWriter, VideoWriter
    from alphapose_trt.io.sources import open_source

    detfile = load_detfile(args.detfile) if args.detfile else None
    source = open_source(image=args.image, indir=args.indir, list_file=args.list_file, video=args.video,
                         webcam=args.webcam, stream=args.stream, decoder=args.decoder, device=args.device)
    estimator = estimator_from_args(args, use_detector=detfile is None)
    # the source's one-off start-up (PyAV: building its GPU conversion, NVDEC: its decoding
    # process) on this thread, before the first batch builds the pipeline's compiled kernels
    source.warm_up()
    outdir: Path = args.outdir
    video_writer = None
    if args.save_video:
        if source.size is None:
            raise AlphaPoseTrtError("--save-video needs a video, webcam or stream input")
        name = (Path(args.video).stem if args.video else "stream") + "_pose.mp4"
        video_writer = VideoWriter(outdir / name, source.fps or DEFAULT_VIDEO_FPS, source.size)
    outputs = FrameOutputs(
        json_writer=AlphaPoseJsonWriter(outdir, format=args.format),
        image_writer=ImageWriter(outdir) if args.save_img else None,
        video_writer=video_writer,
        show_box=args.showbox,
    )
    if args.vis:
        outputs.video_writer = _Tee(outputs.video_writer, LiveView())
    frames_done = persons = 0
    start = time.perf_counter()
    sink = AsyncSink(outputs)
    interrupted = False
    try:
        total = source.length
        batches = (
            (chunk, [f.image for f in chunk], None if detfile is None else [_detections_for(f, detfile) for f in chunk])
            for chunk in batched(source, args.det_batch)
        )
        with tqdm(total=total, unit="frame", desc="infer", dynamic_ncols=True) as bar:
            for chunk, results in estimator.pipeline.process_stream(batches):
                for frame, people in zip(chunk, results):
                    h, w = frame.image.shape[:2]
                    sink.write(frame, FrameResult(frame.image_id, people, h, w))
                    persons += len(people)
                frames_done += len(chunk)
                bar.update(len(chunk))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        source.close()
        sink.close()
    seconds = time.perf_counter() - start
    _summary(frames_done, persons, seconds, source.failures, outputs, interrupted)
    if interrupted:
        return 130
    return 0 if frames_done else 1


class _Tee:
    """Send rendered frames to several writers (the video file and the live window)."""

    def __init__(self, *writers) -> None:
        self.writers = [w for w in writers if w is not None]

    def write(self, image_rgb: np.ndarray) -> None:
        for w in self.writers:
            w.write(image_rgb)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def _summary(frames: int, persons: int, seconds: float, failures, outputs, interrupted: bool) -> None:
    rate = frames / seconds if seconds > 0 else 0.0
    state = "interrupted after" if interrupted else "processed"
    print(f"{state} {frames} frames, {persons} persons, {rate:.1f} frames/s")
    if outputs.json_writer is not None:
        print(f"results: {outputs.json_writer.outdir}")
    if failures:
        print(f"skipped {len(failures)} unreadable inputs:", file=sys.stderr)
        for what, why in failures[:20]:
            print(f"  {what}: {why}", file=sys.stderr)
        if len(failures) > 20:
            print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
