"""All-intra mp4v (OpenCV's writer on constant frames): which batch requests reach the last frames."""
import torch, PyNvVideoCodec as nvc

path = "/tmp/t_40_640_flat.mp4"
import cv2, numpy as np
w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
for i in range(40):
    w.write(np.full((360, 640, 3), i * 5 % 256, np.uint8))
w.release()
for first, then in ((8, 1), (4, 4), (2, 2), (1, 1), (8, 2)):
    d = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, need_scanned_stream_metadata=True, output_color_type=nvc.OutputColorType.NATIVE)
    got, step, log = 0, first, []
    while got < 40:
        n = min(step if got < 32 else then, 40 - got)
        try:
            frames = d.get_batch_frames(n)
        except Exception as exc:
            log.append(f"ask {n} at {got}: {str(exc).splitlines()[0][:60]}")
            break
        if not frames:
            log.append(f"empty at {got}")
            break
        got += len(frames)
    means = []
    print(f"batches of {first} then {then} from 32: read {got}; {log}", flush=True)
