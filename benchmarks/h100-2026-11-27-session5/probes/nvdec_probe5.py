import sys, time, threading
import torch
import PyNvVideoCodec as nvc
from alphapose_trt.io import nvdec
from alphapose_trt.io.sources import open_source
N = nvc.OutputColorType.NATIVE
path = sys.argv[1]
total = 256

def raw(sessions, work):
    bounds = [total * k // sessions for k in range(sessions + 1)]
    def run(a, b):
        s = torch.cuda.Stream(priority=-1)
        d = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=N, cuda_stream=s.cuda_stream if work == "stream" else 0)
        if a: d.seek_to_index(a)
        n = a
        while n < b:
            fr = d.get_batch_frames(min(8, b - n))
            if not fr: break
            if work in ("copy", "stream"):
                with torch.cuda.stream(s):
                    x = torch.stack([torch.from_dlpack(f) for f in fr])
                s.synchronize()
            elif work == "copy-default":
                x = torch.stack([torch.from_dlpack(f) for f in fr]); torch.cuda.current_stream().synchronize()
            n += len(fr)
    t = time.perf_counter()
    th = [threading.Thread(target=run, args=(bounds[k], bounds[k+1])) for k in range(sessions)]
    [x.start() for x in th]; [x.join() for x in th]
    return total / (time.perf_counter() - t)

for work in ("none", "copy-default", "copy", "stream"):
    print(work, " ".join(f"x{s} {raw(s, work):.0f}" for s in (1, 3)), flush=True)

def source(sessions, convert=True):
    nvdec.NVDEC_SESSIONS = sessions
    orig = nvdec.nv12_to_rgb
    if not convert: nvdec.nv12_to_rgb = lambda x: x
    t = time.perf_counter(); n = 0
    with open_source(video=path, decoder="nvdec", device="cuda") as src:
        t_open = time.perf_counter() - t
        for f in src:
            n += 1
            if n >= total: break
    nvdec.nv12_to_rgb = orig
    return n / (time.perf_counter() - t), t_open

for s in (1, 3):
    for conv in (True, False):
        fps, t_open = source(s, conv)
        print(f"source x{s} convert={conv}: {fps:.0f} fps (open {t_open*1e3:.0f} ms)", flush=True)
x = torch.randint(0, 256, (8, 1620, 1920), dtype=torch.uint8, device="cuda")
for _ in range(3): nvdec.nv12_to_rgb(x)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): nvdec.nv12_to_rgb(x)
torch.cuda.synchronize(); print(f"nv12_to_rgb batch of 8: {(time.perf_counter()-t)/20*1e3:.2f} ms")
