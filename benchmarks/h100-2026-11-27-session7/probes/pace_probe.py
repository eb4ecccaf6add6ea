"""What paces the decoding-process NVDEC source through bench.source_fps (branch experiment/nvdec-process)?
Per variant: frames/s, the parent's batch-message arrival times, and the consumer's frame times."""
import statistics, sys, time
from pathlib import Path
import torch
from alphapose_trt.io import decode_process, nvdec
from alphapose_trt.io.sources import open_source

arrivals = []
real_receive = decode_process.DecodeProcess._receive
def receive(self):
    m = real_receive(self)
    if m is not None and m[0] == "batch":
        arrivals.append(time.perf_counter())
    return m
decode_process.DecodeProcess._receive = receive

def run(clip, frames, style, switch=None):
    old = sys.getswitchinterval()
    if switch: sys.setswitchinterval(switch)
    arrivals.clear(); times = []
    with open_source(video=clip, decoder="nvdec", device="cuda") as source:
        source.warm_up()
        arrivals.clear()
        start, count = time.perf_counter(), 0
        if style == "zip":
            for _ in zip(range(frames), source):
                count += 1
                times.append(time.perf_counter())
        else:
            it = iter(source)
            while count < frames:
                f = next(it, None)
                if f is None: break
                count += 1
                times.append(time.perf_counter())
            t_close = time.perf_counter()
            it.close()
            closing = time.perf_counter() - t_close
        t_sync = time.perf_counter()
        torch.cuda.synchronize()
        syncing = time.perf_counter() - t_sync
        total = time.perf_counter() - start
        t_exit = time.perf_counter()
    exiting = time.perf_counter() - t_exit
    print(f"  after the last frame: closing the iterator {1e3 * closing if style != 'zip' else 0:.0f} ms, "
          f"torch.cuda.synchronize {1e3 * syncing:.0f} ms, leaving the with block {1e3 * exiting:.0f} ms; "
          f"frames/s to the last frame {count / (times[-1] - start):.1f}")
    sys.setswitchinterval(old)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    fgaps = sorted(b - a for a, b in zip(times, times[1:]))
    print(f"{clip.name} {style} switch={switch}: {count / total:.1f} frames/s; first batch message {1e3 * (arrivals[0] - start) if arrivals else -1:.1f} ms "
          f"after start, {len(arrivals)} batch messages in {1e3 * (arrivals[-1] - arrivals[0]) if arrivals else -1:.0f} ms "
          f"(median gap {1e3 * statistics.median(gaps) if gaps else -1:.2f} ms); first frame {1e3 * (times[0] - start):.1f} ms, last {1e3 * (times[-1] - start):.0f} ms; "
          f"frame gaps median {1e3 * fgaps[len(fgaps) // 2]:.3f} ms, p90 {1e3 * fgaps[int(len(fgaps) * .9)]:.3f}, max {1e3 * fgaps[-1]:.1f}", flush=True)

for clip in map(Path, sys.argv[1:]):
    nvdec.NVDEC_SESSIONS = 3
    for style, switch in [("zip", None), ("next", None), ("zip", None), ("next", None)]:
        run(clip, 256, style, switch)
