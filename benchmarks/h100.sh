#!/usr/bin/env bash
# The exact commands behind benchmarks/README.md, run on the lent H100 from the repository root:
#   bash benchmarks/h100.sh tests|models|overhead|rgb|gemm|fusion|triton|triton-engines|frontend|frontend-compiled|pipeline|profile|aot|autotune|nvdec OUTDIR
# Synthetic weights (speed does not depend on the values); caches under .cache/ so a warm
# machine reuses weights and Inductor builds between stages. DECODERS=opencv,pyav,nvdec adds PyAV
# and NVDEC video runs to the pipeline stage (PyAV, PyNvVideoCodec on PYTHONPATH); BACKENDS=compiled runs only that one;
# CLIP_FRAMES (300) sets the clip's length and VIDEO_FRAMES (FRAMES) the frames each video run reads.
set -uo pipefail
stage=$1; out=${2:-out/h100}; mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export ALPHAPOSE_TRT_HOME=$PWD/.cache/aptrt TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor
cli="python3 -m alphapose_trt.cli"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
make_clip() {  # CLIP_FRAMES (300) frames of 1080p mp4v: the bench's first in-memory frame (same seed) panning 4 px a frame,
  # so the detector sees the same kind of content as in memory, with a real video's frame-to-frame coherence
  python3 - "$out/clip1080.mp4" "${CLIP_FRAMES:-300}" <<'PY'
import sys, cv2, numpy as np
from alphapose_trt.bench import make_frames
w = cv2.VideoWriter(sys.argv[1], cv2.VideoWriter_fourcc(*"mp4v"), 30, (1920, 1080))
base = cv2.cvtColor(make_frames(1, (1920, 1080), 0)[0], cv2.COLOR_RGB2BGR)
for i in range(int(sys.argv[2])):
    w.write(np.roll(base, 4 * i, axis=1))
w.release()
PY
}
case $stage in
  tests)
    python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider --durations=10 ${TESTS_K:+-k "$TESTS_K"} 2>&1 | tee "$out/gpu_tests.log" ;;
  aot)
    # AOTInductor on this GPU: the build works; loading is probed in a child process first
    $cli synth-weights .cache/aptrt/synthetic/seed0 >/dev/null
    $cli export --model pose --format aot --batch 1 --precision fp16 --device cuda \
      --weights .cache/aptrt/synthetic/seed0/fast_res50_256x192.pth -o "$out/pose.pt2"
    $cli inspect "$out/pose.pt2" | head -1
    $cli infer --image alphapose_trt/assets/examples/people_1.jpg --pose "$out/pose.pt2" \
      --detector .cache/aptrt/synthetic/seed0/yolov3-spp.weights --outdir "$out/aot-infer" 2>&1 | tail -2 ;;
  autotune)
    COMPILE_MODE=max-autotune
    $cli bench --model pose --backend compiled --precision fp16 --batch ${BATCHES:-1,64} --compile-mode max-autotune \
      --outdir "$out/pose-autotune" 2>&1 | tail -12 ;;
  nvdec)
    # NVDEC (PyNvVideoCodec on PYTHONPATH): does importing OpenCV cap it, then sessions beside the pipeline
    make_clip
    python3 benchmarks/nvdec_cv2_check.py "$out/clip1080.mp4" 2>&1 | tee "$out/nvdec_cv2_check.txt"
    python3 benchmarks/nvdec_study.py "$out/clip1080.mp4" --sessions "${SESSIONS:-1,3}" 2>&1 \
      | grep -v -E "INVALID INDEX|^$|MPEG-4; its container|Warn" | tee "$out/nvdec_study.txt" ;;
  profile)
    # host time per pipeline stage, the share of video time spent waiting for frames, kernel tables
    make_clip
    python3 benchmarks/profile_pipeline.py --lags 2 --frames ${FRAMES:-256} --video "$out/clip1080.mp4" ${PROFILE_ARGS:-} 2>&1 \
      | grep -v Warn > "$out/profile.txt"; head -30 "$out/profile.txt" ;;
  overhead)
    # one engine's latency through the call path, b305fe7's call path, and the bare replay
    python3 benchmarks/call_overhead.py --rounds ${ROUNDS:-5} 2>&1 | grep -v Warn | tee "$out/call_overhead.txt" ;;
  rgb)
    # each model's RGB convolution as one Triton kernel (compiled) against cuDNN + Inductor (no-rgb), alternating
    python3 benchmarks/model_levers.py --models detector,pose --variants no-rgb,compiled,no-rgb,compiled --profile --top 12 \
      2>&1 | grep -v Warn | tee "$out/levers_fuse_rgb.txt" ;;
  gemm)
    # the 1x1 convolutions as Triton-autotuned GEMMs, epilogue fusion allowed (gemm-autotune), against compiled;
    # MODELS (pose,detector) picks the models; large batches only (Inductor autotunes each GEMM shape, ~15 s each)
    python3 benchmarks/model_levers.py --models ${MODELS:-pose,detector} --variants gemm-autotune,compiled --large \
      --profile --top 12 2>&1 | grep -v Warn | tee "$out/levers_gemm_autotune.txt" ;;
  fusion)
    # each convolution with its bias and activation fused by the cuDNN frontend (wheel carried in .cfe/);
    # batches 8 and 64 by default; FUSION_ARGS="--large --residual" adds each model's residual join to every shape
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/cfe .cfe/*.whl
    PYTHONPATH=$PYTHONPATH:/tmp/cfe timeout ${FUSION_S:-420} python3 benchmarks/conv_fusion_probe.py ${FUSION_ARGS:---large} 2>&1 | grep -v Warn \
      | tee "$out/conv_fusion.txt" ;;
  triton)
    # each convolution with its bias and activation in one Triton implicit-GEMM kernel (benchmarks/triton_conv.py),
    # the fastest of its tiles, against cuDNN + Inductor's epilogue; FUSION_ARGS as for fusion
    timeout ${FUSION_S:-420} python3 benchmarks/conv_fusion_probe.py --backend triton ${FUSION_ARGS:---large} 2>&1 \
      | grep -v Warn | tee "$out/conv_fusion_triton.txt" ;;
  triton-engines)
    # both compiled engines with every other convolution as a Triton kernel with its epilogue, against the plain ones
    timeout ${FRONTEND_S:-480} python3 benchmarks/frontend_engines.py --backend triton 2>&1 | grep -v Warn \
      | tee "$out/triton_engines.txt" ;;
  frontend)
    # both models with every convolution fused by the cuDNN frontend, against the compiled engines (wheel in .cfe/)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/cfe .cfe/*.whl
    PYTHONPATH=$PYTHONPATH:/tmp/cfe timeout ${FRONTEND_S:-480} python3 benchmarks/frontend_engines.py 2>&1 | grep -v Warn \
      | tee "$out/frontend_engines.txt" ;;
  frontend-compiled)
    # the compiled engines with every other convolution (and the darknet shortcuts) as a cuDNN frontend graph, an op
    # Inductor compiles around, against the plain compiled engines, alternating (wheel in .cfe/)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/cfe .cfe/*.whl
    PYTHONPATH=$PYTHONPATH:/tmp/cfe timeout ${FRONTEND_S:-480} python3 benchmarks/frontend_engines.py --backend frontend-compiled \
      ${FRONTEND_ARGS:-} 2>&1 | grep -v Warn | tee "$out/frontend_compiled.txt" ;;
  models)
    $cli bench --model pose --backend eager,compiled --precision fp16 --batch 1,64 \
      --compile-mode "${COMPILE_MODE:-reduce-overhead}" --outdir "$out/pose" 2>&1 | tail -25
    $cli bench --model detector --backend eager,compiled --precision fp16 --batch 1,8 \
      --compile-mode "${COMPILE_MODE:-reduce-overhead}" --outdir "$out/detector" 2>&1 | tail -25 ;;
  pipeline)
    make_clip
    $cli bench --model pipeline --backend ${BACKENDS:-eager,compiled} --precision fp16 --batch 8 --frames ${FRAMES:-256} \
      --max-persons 8 --compile-mode "${COMPILE_MODE:-reduce-overhead}" --video "$out/clip1080.mp4" \
      --video-frames ${VIDEO_FRAMES:-${FRAMES:-256}} \
      --decoder "${DECODERS:-opencv}" --outdir "$out/pipeline" 2>&1 | grep -v -E "INVALID INDEX|^$" | tail -25 ;;
esac
