"""The session's H.264 clips, written with PyAV/libx264 on the CI machine (pip install av):

    PYTHONPATH=. python3 benchmarks/h100-2026-11-27-session5/probes/make_h264_clips.py OUTDIR

clip1080_h264.mp4: 300 frames, x264's default key-frame interval; clip1080_h264_g30.mp4: 600
frames, a key frame every 30, no B-frames. Both pan the bench's first in-memory frame 4 px a frame,
as h100.sh's mp4v clip does.
"""

import sys
from pathlib import Path

import av
import numpy as np

from alphapose_trt.bench import make_frames

base = make_frames(1, (1920, 1080), 0)[0]
for name, frames, options in (("clip1080_h264.mp4", 300, {}), ("clip1080_h264_g30.mp4", 600, {"g": "30", "bf": "0"})):
    out = av.open(str(Path(sys.argv[1]) / name), "w")
    stream = out.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
    stream.options = {"preset": "veryfast", "crf": "20", **options}
    for i in range(frames):
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
