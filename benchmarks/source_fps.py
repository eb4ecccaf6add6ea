import os, sys, time, cv2
if os.environ.get('CV_THREADS'): cv2.setNumThreads(int(os.environ['CV_THREADS']))
from alphapose_trt.io.sources import open_source
path = sys.argv[1]; n = int(sys.argv[2])
def bare():
    cap = cv2.VideoCapture(path); t = time.perf_counter(); c = 0
    while c < n:
        ok, f = cap.read()
        if not ok: break
        c += 1
    return c / (time.perf_counter() - t)
def src():
    t = time.perf_counter(); c = 0
    with open_source(video=path) as s:
        for f in s:
            c += 1
            if c >= n: break
    return c / (time.perf_counter() - t)
for _ in range(2):
    print(f"bare read {bare():.1f} fps, open_source {src():.1f} fps, cv2 threads {cv2.getNumThreads()}")
