"""Does NVDEC work on the lent machine, and how fast does it decode our clips?"""
import sys, time
import cv2, numpy as np, torch

def cv2_fps(path, limit=300):
    cap = cv2.VideoCapture(path); n = 0; t = time.perf_counter()
    while n < limit and cap.read()[0]: n += 1
    return n / (time.perf_counter() - t), n

import PyNvVideoCodec as nvc
print("nvc", nvc.__version__)
for path in sys.argv[1:]:
    for _ in range(2):
        print(path, "cv2 alone %.1f fps (%d frames)" % cv2_fps(path))
    try:
        dmx = nvc.CreateDemuxer(filename=path)
        print("codec", dmx.GetNvCodecId(), "caps", nvc.GetDecoderCaps(gpuid=0, codec=dmx.GetNvCodecId(), chromaformat=dmx.ChromaFormat(), bitdepth=dmx.BitDepth()))
    except Exception as e:
        print("demux/caps failed:", type(e).__name__, e)
    for attempt in range(2):
        try:
            t = time.perf_counter()
            dec = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
            t_open = time.perf_counter() - t
            n = 0; t = time.perf_counter(); first = None
            while True:
                batch = dec.get_batch_frames(8)
                if not batch: break
                for f in batch:
                    x = torch.from_dlpack(f)
                    if first is None: first = x.clone(); print("frame", x.shape, x.dtype, x.device, x.stride())
                    n += 1
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            print(f"nvdec SimpleDecoder: open {t_open*1e3:.0f} ms, {n} frames, {n/dt:.1f} fps")
            cap = cv2.VideoCapture(path); ok, bgr = cap.read()
            ref = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.int16)
            diff = np.abs(first.cpu().numpy().astype(np.int16) - ref)
            print("vs cv2 first frame: mean abs %.2f, max %d, p99 %.1f" % (diff.mean(), diff.max(), np.percentile(diff, 99)))
        except Exception as e:
            print("SimpleDecoder failed:", type(e).__name__, e)
        try:
            t = time.perf_counter()
            dec = nvc.ThreadedDecoder(path, 16, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
            n = 0
            while True:
                batch = dec.get_batch_frames(8)
                if not batch: break
                for f in batch:
                    x = torch.from_dlpack(f).clone(); n += 1
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            print(f"nvdec ThreadedDecoder: {n} frames, {n/dt:.1f} fps (open counted)")
            dec.end()
        except Exception as e:
            print("ThreadedDecoder failed:", type(e).__name__, e)
