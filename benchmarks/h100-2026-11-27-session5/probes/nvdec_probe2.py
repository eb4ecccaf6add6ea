import sys, time, threading
import cv2, numpy as np, torch
import PyNvVideoCodec as nvc

def nv12_to_rgb_cv(y_uv: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(y_uv, cv2.COLOR_YUV2RGB_NV12)

def cv2_frame0(path):
    cap = cv2.VideoCapture(path); ok, bgr = cap.read(); return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

def stats(a, b):
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)); return f"mean {d.mean():.3f} max {d.max()} frac>1 {np.mean(d>1):.4f}"

for path in sys.argv[1:]:
    print("==", path)
    dec = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE)
    f = dec.get_batch_frames(1)[0]
    print(type(f).__name__, [a for a in dir(f) if not a.startswith("__")])
    for a in ("format", "shape", "strides", "dtype", "timestamp", "getPTS", "decode_stats"):
        if hasattr(f, a):
            try: v = getattr(f, a); print(a, v() if callable(v) else v)
            except Exception as e: print(a, "err", e)
    t = torch.from_dlpack(f); print("dlpack", t.shape, t.stride(), t.dtype, t.device)
    try:
        planes = f.cuda(); print("planes", [(p.__cuda_array_interface__["shape"], p.__cuda_array_interface__.get("strides")) for p in planes])
    except Exception as e: print("cuda() err", e)
    nv12 = t.cpu().numpy()
    if nv12.ndim == 3: nv12 = nv12[..., 0]
    ref = cv2_frame0(path)
    print("cvtColor(NV12) vs VideoCapture:", stats(nv12_to_rgb_cv(np.ascontiguousarray(nv12)), ref))
    dec_rgb = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
    rgb = torch.from_dlpack(dec_rgb.get_batch_frames(1)[0]).cpu().numpy()
    print("NVDEC RGB vs VideoCapture:", stats(rgb, ref), "| vs cvtColor(NV12):", stats(rgb, nv12_to_rgb_cv(np.ascontiguousarray(nv12))))

path = sys.argv[-1]
def spin(seconds):
    n = 0; end = time.perf_counter() + seconds
    while time.perf_counter() < end: n += 1
    return n / seconds
base = spin(0.5); print(f"python loop alone {base/1e6:.2f} M/s")
for kind in ("simple", "threaded"):
    done = threading.Event(); count = [0]
    def work():
        d = (nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE) if kind == "simple"
             else nvc.ThreadedDecoder(path, 16, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE))
        t0 = time.perf_counter()
        while not done.is_set():
            b = d.get_batch_frames(8)
            if not b: break
            count[0] += len(b)
        count.append(count[0] / (time.perf_counter() - t0))
        if kind == "threaded": d.end()
    th = threading.Thread(target=work); th.start(); time.sleep(0.05)
    rate = spin(0.3); done.set(); th.join()
    print(f"{kind}: python loop beside decoder {rate/1e6:.2f} M/s ({rate/base:.2f} of alone); decoder {count[1]:.0f} fps")
# ThreadedDecoder buffer reuse
d = nvc.ThreadedDecoder(path, 16, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE)
b = d.get_batch_frames(8); views = [torch.from_dlpack(x) for x in b]; sums = [int(v.sum()) for v in views]
time.sleep(0.2); print("threaded: frames unchanged after 0.2 s:", sums == [int(v.sum()) for v in views])
b2 = d.get_batch_frames(8); print("threaded: first batch unchanged after next get:", sums == [int(v.sum()) for v in views],
      "ptrs equal", [x.__cuda_array_interface__["data"][0] if hasattr(x, "__cuda_array_interface__") else None for x in b[:2]], [torch.from_dlpack(x).data_ptr() for x in b2[:2]], [v.data_ptr() for v in views[:2]])
d.end()
s = torch.cuda.Stream()
d = nvc.SimpleDecoder(path, gpu_id=0, cuda_stream=s.cuda_stream, use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE)
b = d.get_batch_frames(8); print("own stream ok", len(b), torch.from_dlpack(b[0]).shape)
b2 = d.get_batch_frames(8); print("simple ptrs", [torch.from_dlpack(x).data_ptr() for x in b[:2]], [torch.from_dlpack(x).data_ptr() for x in b2[:2]])
