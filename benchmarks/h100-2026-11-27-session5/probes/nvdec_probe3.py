import sys, time, threading
import torch
import PyNvVideoCodec as nvc
N = nvc.OutputColorType.NATIVE

def make(cls, path, start=0, fmt=N):
    if cls == "simple":
        d = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=fmt)
        if start: d.seek_to_index(start)
        return d
    return nvc.ThreadedDecoder(path, 16, gpu_id=0, use_device_memory=True, output_color_type=fmt, start_frame=start)

def run(cls, path, start, count, out, checks):
    d = make(cls, path, start); n = 0
    while n < count:
        b = d.get_batch_frames(min(8, count - n))
        if not b: break
        if n == 0: checks[start] = int(torch.from_dlpack(b[0]).sum())
        n += len(b)
    torch.cuda.synchronize()
    if hasattr(d, "end"): d.end()
    out.append(n)

def spin(seconds):
    n = 0; end = time.perf_counter() + seconds
    while time.perf_counter() < end: n += 1
    return n / seconds

base = spin(0.3)
for path in sys.argv[1:]:
    total = len(nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=N))
    print("==", path, total, "frames")
    for cls in ("simple", "threaded"):
        for fmt in (N, nvc.OutputColorType.RGB):
            t = time.perf_counter(); out = []; run(cls, path, 0, total, out, {}); dt = time.perf_counter() - t
            print(f"  {cls} {fmt}: one session {out[0]/dt:.1f} fps")
    seq = {}
    d = make("simple", path); i = 0
    while True:
        b = d.get_batch_frames(8)
        if not b: break
        for f in b:
            seq[i] = int(torch.from_dlpack(f).sum()); i += 1
    for cls in ("simple", "threaded"):
        for sessions in (2, 3, 4):
            bounds = [total * k // sessions for k in range(sessions + 1)]
            out, checks, threads = [], {}, []
            t = time.perf_counter()
            for k in range(sessions):
                th = threading.Thread(target=run, args=(cls, path, bounds[k], bounds[k + 1] - bounds[k], out, checks)); th.start(); threads.append(th)
            time.sleep(0.05); loop = spin(0.2)
            for th in threads: th.join()
            dt = time.perf_counter() - t
            ok = all(seq.get(s) == v for s, v in checks.items())
            print(f"  {cls} x{sessions}: {sum(out)} frames, {sum(out)/dt:.1f} fps aggregate, python loop {loop/base:.2f} of alone, seek exact {ok}")
