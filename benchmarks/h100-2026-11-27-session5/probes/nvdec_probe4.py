import sys, time
import torch
import PyNvVideoCodec as nvc
N = nvc.OutputColorType.NATIVE
for path in sys.argv[1:]:
    t = time.perf_counter()
    d = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=N, need_scanned_stream_metadata=True)
    m = d.get_scanned_stream_metadata()
    dt = time.perf_counter() - t
    print("==", path, f"scan {dt*1e3:.0f} ms", [a for a in dir(m) if not a.startswith("_")])
    keys = list(m.key_frame_indices)
    print("   num_frames", m.num_frames, "keys", len(keys), keys[:8])
    seq = []
    while True:
        b = d.get_batch_frames(8)
        if not b: break
        seq += [int(torch.from_dlpack(f).sum()) for f in b]
    # chunks on one ThreadedDecoder via reconfigure
    starts = [0, 40, 100, 64]
    td = nvc.ThreadedDecoder(path, 16, gpu_id=0, use_device_memory=True, output_color_type=N, start_frame=starts[0])
    for i, a in enumerate(starts):
        if i: 
            t = time.perf_counter(); td.reconfigure_decoder(path, a); r = time.perf_counter() - t
        else: r = 0
        t = time.perf_counter(); got = []
        while len(got) < 16:
            b = td.get_batch_frames(8)
            if not b: break
            got += [int(torch.from_dlpack(f).sum()) for f in b]
        print(f"   threaded start {a}: reconfigure {r*1e3:.1f} ms, 16 frames in {(time.perf_counter()-t)*1e3:.1f} ms, exact {got == seq[a:a+16]}")
    td.end()
