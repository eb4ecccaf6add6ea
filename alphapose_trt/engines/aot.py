"""AOTInductor packages (`.pt2`): compiled ahead of time, loadable without the model code.

Loading is probed in a child process first because some torch builds crash (segfault) inside the
AOTInductor loader: seen with torch 2.11.0+cu130 on an H100, for CUDA and CPU packages alike,
while torch 2.14 on the CPU loads fine. A crash in the probe becomes a one-line error naming the
torch version instead of killing the user's process. Successful probes are remembered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from alphapose_trt.engines.base import META_KEY, Engine, EngineMeta, example_batch
from alphapose_trt.engines.eager import meta_for, prepare_module
from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.models.load import LoadedModel, file_sha256

META_MEMBER = f"{META_KEY}/meta.json"  # extra zip member holding our metadata


def export_aot(
    model: LoadedModel,
    path: str | Path,
    batch: tuple[int, int, int] = (1, 1, 1),
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> EngineMeta:
    """torch.export the model (dynamic batch when min < max) and package it with AOTInductor."""
    device = torch.device(device)
    if precision == "fp16" and device.type == "cpu":
        raise AlphaPoseTrtError("fp16 AOTInductor packages need --device cuda (CPU kernels are fp32)")
    meta = meta_for(model, "aot", precision, batch).with_(extra={**model.extra, "device": device.type})
    on_gpu = device.type == "cuda"  # the compiled engine's layout and channel padding
    module = prepare_module(model, device, precision, channels_last=on_gpu, pad_convs=on_gpu)
    h, w = model.input_hw
    example = torch.rand(example_batch(batch), 3, h, w, dtype=meta.dtype, device=device)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=batch[0], max=batch[2])},) if meta.dynamic else None
    with torch.inference_mode(False), torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / "package.pt2"
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(staged), inductor_configs={"freezing": True}
        )
        with zipfile.ZipFile(staged, "a") as zf:
            root = zf.namelist()[0].split("/")[0]
            zf.writestr(f"{root}/{META_MEMBER}", meta.to_json())
        os.replace(staged, path)
    return meta


def read_aot_meta(path: str | Path) -> EngineMeta:
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith(META_MEMBER)), None)
            if member is None:
                raise AlphaPoseTrtError(f"{path}: .pt2 package has no alphapose-trt metadata")
            return EngineMeta.from_json(zf.read(member), str(path))
    except zipfile.BadZipFile as exc:
        raise AlphaPoseTrtError(f"{path}: not an AOTInductor package (not a zip archive)") from exc


_PROBE = (
    "import sys, torch\n"
    "m = torch._inductor.aoti_load_package(sys.argv[1])\n"
    "print('ok')\n"
)


def probe_load(path: Path, cache: Path | None = None) -> None:
    """Load the package once in a child process; raise a clear error if that crashes."""
    from alphapose_trt.download import cache_dir

    marker_dir = cache or cache_dir() / "aot-probes"
    marker = marker_dir / f"{file_sha256(path)[:16]}-torch{torch.__version__}.ok"
    if marker.exists():
        return
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        how = f"crashed with signal {-proc.returncode}" if proc.returncode < 0 else f"failed ({proc.returncode})"
        last = (proc.stderr.strip().splitlines() or [""])[-1][:200]
        raise AlphaPoseTrtError(
            f"{path}: loading the AOTInductor package {how} under torch {torch.__version__} "
            f"(known bad: 2.11.0+cu130; known good: 2.14 on CPU); use --backend compiled instead. {last}"
        )
    marker_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()


class AotEngine(Engine):
    """A loaded AOTInductor package. Static packages run only their batch size (padded)."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", probe: bool = True) -> None:
        path = Path(path)
        meta = read_aot_meta(path)
        super().__init__(meta, device)
        built_for = meta.extra.get("device", "cpu")
        if built_for != self.device.type:
            raise AlphaPoseTrtError(f"{path}: package was built for {built_for}, not {self.device.type}")
        if probe:
            probe_load(path)
        index = self.device.index if self.device.index is not None else -1
        self._model = torch._inductor.aoti_load_package(str(path), device_index=index)
        if not meta.dynamic:
            self.batch_sizes = (meta.batch[2],)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return self._model(x)
