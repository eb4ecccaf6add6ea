"""`alphapose-trt`: one entry point; every subcommand is a thin wrapper over the Python API.

Errors a user can cause end as one line on stderr (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from alphapose_trt import __version__
from alphapose_trt.errors import AlphaPoseTrtError


def _cmd_download(args: argparse.Namespace) -> int:
    from alphapose_trt.download import download_main

    return download_main(args.names or None, args.dest)


def _cmd_synth(args: argparse.Namespace) -> int:
    from alphapose_trt.models.synthetic import write_synthetic_weights

    for name, path in write_synthetic_weights(args.outdir, seed=args.seed).items():
        print(f"{name}: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from alphapose_trt.engines import export_engine, parse_batch
    from alphapose_trt.models.load import load_detector, load_pose

    if args.model == "detector":
        model = load_detector(args.weights, args.cfg, args.img_size)
    else:
        if args.img_size is not None:
            raise AlphaPoseTrtError("--img-size applies to --model detector only")
        model = load_pose(args.weights, args.cfg)
    batch = parse_batch(args.batch, args.dynamic)
    meta = export_engine(model, args.format, args.output, batch, args.precision, args.device)
    print(f"{args.output}: {meta.describe()}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from alphapose_trt.engines import read_meta

    meta = read_meta(args.file)
    print(meta.describe())
    print(json.dumps(json.loads(meta.to_json()), indent=2))
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to an engine file (onnx, aot, tensorrt)")
    p.add_argument("--model", choices=("detector", "pose"), required=True)
    p.add_argument("--format", choices=("onnx", "aot", "tensorrt"), required=True)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--batch", type=int, help="static batch size (default 1)")
    size.add_argument("--dynamic", metavar="MIN:OPT:MAX", help="dynamic batch range, e.g. 1:8:64")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--weights", type=Path, required=True, help="darknet .weights or AlphaPose .pth")
    p.add_argument("--cfg", type=Path, help="darknet cfg or AlphaPose yaml (default: built-in)")
    p.add_argument("--img-size", type=int, help="detector input size (default: the cfg's, 608)")
    p.add_argument("--device", default="cpu", help="device the AOT package is built for")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(func=_cmd_export)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser. Only the module of `command` is imported (torch-heavy modules load lazily)."""
    parser = argparse.ArgumentParser(
        prog="alphapose-trt", description="Fast AlphaPose multi-person pose estimation."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch the real weight files into the cache folder")
    p.add_argument("names", nargs="*", help="file names (default: all)")
    p.add_argument("--dest", type=Path, help="folder (default: $ALPHAPOSE_TRT_HOME or ~/.cache/alphapose-trt)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("synth-weights", help="write synthetic weights in the real file formats")
    p.add_argument("outdir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    _add_export(sub)

    p = sub.add_parser("inspect", help="print an engine file's metadata")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_cmd_inspect)

    for name, help_text, module, add, run in _MODULE_COMMANDS:
        p = sub.add_parser(name, help=help_text)
        if name == command:
            mod = importlib.import_module(module)
            getattr(mod, add)(p)
            p.set_defaults(func=getattr(mod, run))
    return parser


# Subcommands whose modules define their own arguments: (name, help, module, add-args, run).
_MODULE_COMMANDS = (
    ("infer", "pose estimation on images, folders, videos, webcams or streams",
     "alphapose_trt.infer", "add_infer_arguments", "run_infer"),
    ("validate", "COCO val2017 keypoint AP with GT and detector boxes",
     "alphapose_trt.eval.validate", "add_validate_arguments", "run_validate"),
    ("bench", "benchmark the models and the pipeline against an eager fp32 baseline",
     "alphapose_trt.bench", "add_bench_arguments", "run_bench"),
    ("demo", "download the weights and run the pipeline on the bundled example images",
     "alphapose_trt.demo", "add_demo_arguments", "run_demo"),
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except AlphaPoseTrtError as exc:
        print(f"alphapose-trt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alphapose-trt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our stdout went away (`inspect x | head`): no traceback, and point stdout
        # at /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
