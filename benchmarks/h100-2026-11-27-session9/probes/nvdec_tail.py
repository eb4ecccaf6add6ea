"""Why NVDEC fails at the tail of a short mp4v clip: scanned metadata and batch requests."""
import cv2, numpy as np, torch, PyNvVideoCodec as nvc

def clip(path, n, size, kind):
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    for i in range(n):
        if kind == "flat":
            img = np.full((size[1], size[0], 3), i * 5 % 256, np.uint8)
        else:
            img = np.roll(np.tile(np.arange(size[0], dtype=np.uint8)[None, :, None], (size[1], 1, 3)), 4 * i, axis=1)
        w.write(img)
    w.release()

for n, size, kind in ((40, (320, 192), "flat"), (40, (320, 192), "pan"), (40, (640, 360), "flat"), (40, (640, 360), "pan"), (96, (320, 192), "flat")):
    path = f"/tmp/t_{n}_{size[0]}_{kind}.mp4"
    clip(path, n, size, kind)
    cap = cv2.VideoCapture(path); count_cv = 0
    while cap.read()[0]:
        count_cv += 1
    d = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, need_scanned_stream_metadata=True, output_color_type=nvc.OutputColorType.NATIVE)
    meta, scanned = d.get_stream_metadata(), d.get_scanned_stream_metadata()
    got, err = 0, None
    try:
        while got < scanned.num_frames:
            frames = d.get_batch_frames(min(8, scanned.num_frames - got))
            if not frames:
                break
            got += len(frames)
    except Exception as exc:
        err = f"{type(exc).__name__}: {exc}"
    print(f"{path}: opencv {count_cv} header {meta.num_frames} scanned {scanned.num_frames} keys {list(scanned.key_frame_indices)[:6]} read {got} error {err}", flush=True)
