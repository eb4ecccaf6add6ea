"""`alphapose-trt demo` (what `make demo` runs): fetch the real weights, run the main job on the
bundled example images, and say where the results are.

Offline, the real weights cannot be fetched: the demo says so plainly and runs the same pipeline on
synthetic weights (same architecture and file formats), whose keypoints are meaningless, so a
newcomer still sees every stage work end to end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alphapose_trt.errors import AlphaPoseTrtError

EXAMPLES = Path(__file__).parent / "assets" / "examples"


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outdir", type=Path, default=Path("out/demo"))
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when present)")
    p.add_argument("--offline", action="store_true", help="skip the download and use synthetic weights")


def _weights(offline: bool) -> tuple[Path, Path, bool]:
    """(detector weights, pose weights, real?)."""
    from alphapose_trt.download import cache_dir, fetch_weights
    from alphapose_trt.models.synthetic import write_synthetic_weights

    if not offline:
        try:
            paths = fetch_weights()
            return paths["yolov3-spp.weights"], paths["fast_res50_256x192.pth"], True
        except AlphaPoseTrtError as exc:
            print(f"demo: could not fetch the real weights ({exc})", file=sys.stderr)
    synth = cache_dir() / "synthetic"
    paths = {"detector": synth / "yolov3-spp.weights", "pose": synth / "fast_res50_256x192.pth"}
    if not all(p.is_file() for p in paths.values()):
        paths = write_synthetic_weights(synth)
    print("demo: using SYNTHETIC weights: the keypoints are random, only the pipeline is real", file=sys.stderr)
    return paths["detector"], paths["pose"], False


def run_demo(args: argparse.Namespace) -> int:
    from alphapose_trt.cli import main

    detector, pose, real = _weights(args.offline)
    argv = ["infer", "--indir", str(EXAMPLES), "--detector", str(detector), "--pose", str(pose),
            "--outdir", str(args.outdir), "--save-img", "--showbox"]
    if args.device:
        argv += ["--device", args.device]
    if not real:
        argv += ["--conf", "0.5", "--max-persons", "4"]  # random weights: keep the render readable
    code = main(argv)
    if code == 0:
        print(f"demo: rendered images in {args.outdir / 'vis'}; results in {args.outdir / 'alphapose-results.json'}")
    return code
