"""Host time in front of the kernels: one compiled engine's synchronised latency through three
call paths, alternately in one process, so the same CUDA graph (and the same cuDNN picks) sits
behind each.

- `call`: `engine(x)` as the bench and users call it (this commit);
- `old-call`: the call path of b305fe7 replayed here: `torch.split` and re-join even for one
  chunk, and the cuDNN flags (`conv_precision`) entered around every graph replay;
- `replay`: only what no call can skip: the copy into the graph's input, the replay, and the
  clone of its output.

    python3 benchmarks/call_overhead.py [--rounds 5] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch

from alphapose_trt.bench import BenchOptions, Stopwatch, load_models, random_inputs
from alphapose_trt.cli import build_parser
from alphapose_trt.engines.base import pad_rows
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.eager import conv_precision


def old_call(engine: CompiledEngine, x: torch.Tensor) -> torch.Tensor:
    """b305fe7's `Engine.__call__` with its `ModuleEngine._run`."""
    engine.check_input(x)
    x = x.to(device=engine.device, dtype=engine.input_dtype)
    outputs = []
    for chunk in torch.split(x, engine.meta.batch[2]):
        n = chunk.shape[0]
        with torch.inference_mode(), conv_precision(engine.meta.precision, engine.tf32):
            outputs.append(engine._forward(pad_rows(chunk, engine.padded_size(n)))[:n])
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


@torch.inference_mode()
def replay_only(engine: CompiledEngine, x: torch.Tensor) -> torch.Tensor:
    graph, static_in, static_out = engine._forward.graphs[engine._forward.key(x.shape, x.dtype, x.device)]
    static_in.copy_(x)
    graph.replay()
    return static_out.clone()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,8", help="detector batches; the pose net runs 1 and 64")
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
    models, _ = load_models(opts, ("detector", "pose"))
    watch = Stopwatch(torch.device("cuda"))
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    det_batches = tuple(int(b) for b in args.batches.split(","))
    pose_batches = tuple(64 if b > 1 else 1 for b in det_batches)
    for kind, batches in (("detector", det_batches), ("pose", pose_batches)):
        engine = CompiledEngine(models[kind], "cuda", "fp16", max_batch=max(batches), mode="reduce-overhead",
                                batch_sizes=batches)
        engine.warmup()
        paths = {"call": engine, "old-call": partial(old_call, engine), "replay": partial(replay_only, engine)}
        for batch in batches:
            inputs = random_inputs(engine, batch, 3, seed=batch)
            for path in paths.values():
                for x in inputs:
                    path(x)
            samples: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, path in paths.items():
                    samples[name].append(statistics.median(watch.latencies_ms(path, inputs, args.iters)))
            line = "  ".join(f"{name} {min(v):.4f}-{max(v):.4f}" for name, v in samples.items())
            print(f"{kind:8s} b{batch:<3d} median latency ms per round ({args.rounds} rounds): {line}", flush=True)
        engine.close()


if __name__ == "__main__":
    main()
