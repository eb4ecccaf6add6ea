"""Download the real AlphaPose weight files, resuming interrupted transfers.

Why stdlib urllib and not requests: one fewer dependency for a feature used once per machine.
Why resume: the files are 160-250 MB and the hosts (pjreddie.com, Google Drive) are slow or
flaky; a dropped connection must not cost the bytes already fetched. A transfer is streamed to
``<file>.part`` and renamed into place only when its size is right, so a file at the final path is
always complete.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

from alphapose_trt import __version__
from alphapose_trt.errors import AlphaPoseTrtError

DEFAULT_TIMEOUT = 30.0  # seconds without data before a socket read gives up
_CHUNK = 1 << 20
_SNIFF_BYTES = 512  # enough of a body to tell an HTML page from a binary weight file
_USER_AGENT = f"alphapose-trt/{__version__}"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


def _drive_direct(file_id: str) -> str:
    """Google Drive URL that serves a large file without the interactive virus-scan page."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


def _drive_page(file_id: str) -> str:
    """Google Drive page a person opens in a browser to download the file by hand."""
    return f"https://drive.google.com/file/d/{file_id}/view"


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable weight file.

    urls are tried in order; manual_url is what a person opens when every automatic attempt fails;
    size (bytes) is checked when known, None when not recorded.
    """

    name: str
    urls: tuple[str, ...]
    model: str
    manual_url: str
    size: int | None = None


YOLOV3_SPP_BYTES = 252_209_544
_YOLO_DRIVE_ID = "1D47msNOOiJKvPOXlnpyzdKA3k6E97NTC"
_FASTPOSE_DRIVE_ID = "1kQhnMRURFiy7NsdS8EFL-8vtqEXOgECn"

# The FastPose size is left None until measured on a verified copy: a wrong number would reject
# good files. The darknet size follows exactly from the architecture.
WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            name="yolov3-spp.weights",
            urls=(
                "https://pjreddie.com/media/files/yolov3-spp.weights",
                _drive_direct(_YOLO_DRIVE_ID),
            ),
            model="YOLOv3-SPP person detector (darknet format, ~252 MB)",
            manual_url="https://pjreddie.com/media/files/yolov3-spp.weights",
            # darknet header + every float of the built-in YOLOv3-SPP (test_darknet checks it)
            size=YOLOV3_SPP_BYTES,
        ),
        WeightSpec(
            name="fast_res50_256x192.pth",
            urls=(_drive_direct(_FASTPOSE_DRIVE_ID),),
            model="FastPose ResNet-50 256x192 pose network (AlphaPose model zoo, ~160 MB)",
            manual_url=_drive_page(_FASTPOSE_DRIVE_ID),
        ),
    )
}


def cache_dir() -> Path:
    """Where downloaded weights live: $ALPHAPOSE_TRT_HOME, else the XDG cache directory."""
    home = os.environ.get("ALPHAPOSE_TRT_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "alphapose-trt"


def weights_path(name: str) -> Path:
    """Path of weight file `name` in the cache (whether or not it has been downloaded yet)."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise AlphaPoseTrtError(f"weight name {name!r} must be a plain file name, not a path")
    return cache_dir() / name


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


class _HtmlPage(Exception):
    """The body is a web page (Drive quota or virus-scan notice), not the weight file."""


class _ConnectionLost(Exception):
    """Reading the body failed; the cause is the network error."""


class _RangeNotSatisfiable(Exception):
    """HTTP 416: nothing exists past the requested offset; total is the server's size if given."""

    def __init__(self, total: int | None) -> None:
        super().__init__(total)
        self.total = total


def _why_unreachable(reason: object) -> str:
    """Turn a urllib failure reason into words a user can act on."""
    if isinstance(reason, socket.gaierror):
        return "no network (DNS lookup failed)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "connection timed out"
    if isinstance(reason, (http.client.IncompleteRead, ConnectionResetError)):
        return "the server closed the connection early"
    return f"network error ({reason})"


def _open(url: str, offset: int, timeout: float, advice: str) -> http.client.HTTPResponse:
    """Send the GET (with a Range header when resuming); network and HTTP errors become one line."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:
                match = _UNSATISFIED_RANGE.search(exc.headers.get("Content-Range", ""))
                raise _RangeNotSatisfiable(int(match.group(1)) if match else None) from None
            raise AlphaPoseTrtError(
                f"cannot download {url}: HTTP {exc.code} {exc.reason}; {advice}"
            ) from exc
    except urllib.error.URLError as exc:
        raise AlphaPoseTrtError(
            f"cannot download {url}: {_why_unreachable(exc.reason)}; {advice}"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise AlphaPoseTrtError(
            f"cannot download {url}: {_why_unreachable(exc)}; {advice}"
        ) from exc


def _looks_like_html(first_bytes: bytes) -> bool:
    """Weight files are binary (darknet header, zip); a page of markup means a quota/scan page."""
    head = first_bytes[:_SNIFF_BYTES].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _range_start_and_total(response: http.client.HTTPResponse, url: str) -> tuple[int, int | None]:
    """Parse the Content-Range of a 206 answer: (first byte sent, full file size or None)."""
    match = _CONTENT_RANGE.search(response.headers.get("Content-Range", ""))
    if match is None:
        raise AlphaPoseTrtError(f"cannot download {url}: 206 answer without a valid Content-Range")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _read_chunk(response: http.client.HTTPResponse) -> bytes:
    """Whatever part of the body has arrived (up to _CHUNK); b"" at the end.

    read1 never waits to fill the buffer, so bytes received before a stall or a cut-off are
    handed over (and kept in the .part) instead of being lost with the failed read.
    """
    try:
        return response.read1(_CHUNK)
    except (OSError, http.client.HTTPException) as exc:
        raise _ConnectionLost(exc) from exc


def _read_head(response: http.client.HTTPResponse) -> bytes:
    """First _SNIFF_BYTES of the body (fewer if it is shorter), enough to recognise a web page."""
    head = b""
    while len(head) < _SNIFF_BYTES:
        chunk = _read_chunk(response)
        if not chunk:
            break
        head += chunk
    return head


def _copy_body(response: http.client.HTTPResponse, fh: IO[bytes], bar: tqdm, sniff: bool) -> None:
    """Copy the body to `fh`; with `sniff`, raise _HtmlPage if it starts like a web page."""
    chunk = _read_head(response) if sniff else _read_chunk(response)
    if sniff and _looks_like_html(chunk):
        raise _HtmlPage
    while chunk:
        fh.write(chunk)
        bar.update(len(chunk))
        chunk = _read_chunk(response)


def _stream(
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    total: int | None,
    progress: bool,
    url: str,
    advice: str,
) -> int:
    """Append the body to `part` (from `offset`, truncating it when 0); returns the part's size."""
    bar_options = dict(unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)
    label = part.name.removesuffix(".part")
    try:
        with open(part, "ab" if offset else "wb") as fh, tqdm(
            total=total, initial=offset, desc=label, disable=not progress, **bar_options
        ) as bar:
            _copy_body(response, fh, bar, sniff=offset == 0)
            fh.flush()
            os.fsync(fh.fileno())
    except _HtmlPage:
        raise AlphaPoseTrtError(
            f"{url} returned an HTML page instead of the file (download quota or confirmation "
            f"page); {advice}"
        ) from None
    except _ConnectionLost as exc:
        raise AlphaPoseTrtError(
            f"connection to {url} lost after {part.stat().st_size} bytes "
            f"({_why_unreachable(exc.args[0])}); run again to resume from {part}"
        ) from exc
    except OSError as exc:
        raise AlphaPoseTrtError(f"cannot write {part}: {exc.strerror or exc}") from exc
    return part.stat().st_size


def _check_size(
    part: Path, size: int, total: int | None, expected: int | None, url: str, advice: str
) -> None:
    """A short part is kept for resuming; a part that cannot be right is deleted."""
    if total is not None and size < total:
        raise AlphaPoseTrtError(
            f"connection to {url} lost after {size} of {total} bytes; run again to resume from "
            f"{part}"
        )
    for label, want in (("the server announced", total), ("expected", expected)):
        if want is not None and size != want:
            part.unlink()
            raise AlphaPoseTrtError(
                f"download of {url} has {size} bytes but {label} {want}; deleted it, try again or "
                f"{advice}"
            )


def _resumable_offset(part: Path, expected_size: int | None) -> int:
    """Size of an existing .part worth resuming; an oversized one is discarded."""
    if not part.exists():
        return 0
    size = part.stat().st_size
    if expected_size is not None and size > expected_size:
        part.unlink()
        return 0
    return size


def _open_at(
    url: str, part: Path, offset: int, expected_size: int | None, timeout: float, advice: str
) -> tuple[http.client.HTTPResponse | None, int]:
    """Open the transfer at `offset`: (response, offset it starts at), response None when a 416
    confirms that the part is already the whole file."""
    try:
        return _open(url, offset, timeout, advice), offset
    except _RangeNotSatisfiable as exc:
        known_total = exc.total if exc.total is not None else expected_size
        if known_total == offset:
            return None, offset
        part.unlink()  # longer than the file, or its length cannot be confirmed: start over
        return _open(url, 0, timeout, advice), 0


def _body_span(
    response: http.client.HTTPResponse, offset: int, url: str, part: Path
) -> tuple[int, int | None]:
    """(file offset the body starts at, full file size or None if not announced).

    A 200 answer to a Range request means the server ignored it: the body is the whole file.
    """
    if response.status != 206:
        return 0, _content_length(response)
    start, total = _range_start_and_total(response, url)
    if start != offset:
        raise AlphaPoseTrtError(
            f"cannot resume {url}: asked for byte {offset}, the server sent from {start}; "
            f"delete {part} and run again"
        )
    return start, total


def _finish(part: Path, dest: Path) -> Path:
    os.replace(part, dest)
    return dest


def download_file(
    url: str,
    dest: str | os.PathLike,
    expected_size: int | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    manual_url: str | None = None,
) -> Path:
    """Download `url` to `dest`, resuming `dest.part` if an earlier attempt left one.

    The file appears at `dest` (atomic rename) only when its size matches the server's
    Content-Length / Content-Range and `expected_size`. `manual_url` is the link named in error
    messages for a manual download (defaults to `url`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    advice = f"download it manually from {manual_url or url} and place it at {dest}"
    offset = _resumable_offset(part, expected_size)
    if expected_size is not None and offset == expected_size:
        return _finish(part, dest)
    response, offset = _open_at(url, part, offset, expected_size, timeout, advice)
    if response is None:
        return _finish(part, dest)
    with response:
        if response.headers.get_content_type() == "text/html":
            raise AlphaPoseTrtError(f"{url} returned an HTML page instead of the file; {advice}")
        offset, total = _body_span(response, offset, url, part)
        if total is not None and expected_size is not None and total != expected_size:
            raise AlphaPoseTrtError(
                f"{url} serves {total} bytes but {expected_size} were expected; {advice}"
            )
        size = _stream(response, part, offset, total, progress, url, advice)
    _check_size(part, size, total, expected_size, url, advice)
    return _finish(part, dest)


def _resolve(names: Sequence[str] | None, catalog: Mapping[str, WeightSpec]) -> list[WeightSpec]:
    if names is None:
        return list(catalog.values())
    unknown = [name for name in names if name not in catalog]
    if unknown:
        raise AlphaPoseTrtError(
            f"unknown weight file(s) {', '.join(unknown)}; known: {', '.join(catalog)}"
        )
    return [catalog[name] for name in names]


def _is_present(path: Path, spec: WeightSpec) -> bool:
    return path.is_file() and (spec.size is None or path.stat().st_size == spec.size)


def _fetch_one(spec: WeightSpec, dest: Path, progress: bool) -> Path:
    """Try each URL of `spec` in turn; one line naming every failure when all of them fail."""
    failures = []
    for url in spec.urls:
        try:
            return download_file(url, dest, spec.size, progress, manual_url=spec.manual_url)
        except AlphaPoseTrtError as exc:
            failures.append(str(exc))
    raise AlphaPoseTrtError(
        f"could not download {spec.name} ({spec.model}) from any source: {' | '.join(failures)}"
    )


def fetch_weights(
    names: Sequence[str] | None = None,
    dest_dir: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    catalog: Mapping[str, WeightSpec] = WEIGHTS,
) -> dict[str, Path]:
    """Make sure the named weight files (all known ones by default) exist; return their paths.

    Files already present with the right size are not downloaded again. `dest_dir` defaults to
    `cache_dir()`; `catalog` replaces the built-in table (tests, private mirrors).
    """
    directory = Path(dest_dir) if dest_dir is not None else cache_dir()
    paths = {}
    for spec in _resolve(names, catalog):
        dest = directory / spec.name
        paths[spec.name] = dest if _is_present(dest, spec) else _fetch_one(spec, dest, progress)
    return paths


def download_main(names: list[str] | None, dest_dir: Path | None) -> int:
    """CLI body of `alphapose-trt download`: fetch each file, print where it is, 0 if all worked.

    Each file is attempted even if an earlier one failed, so one dead link does not hide the rest.
    """
    try:
        specs = _resolve(names, WEIGHTS)
    except AlphaPoseTrtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = False
    for spec in specs:
        try:
            path = fetch_weights([spec.name], dest_dir)[spec.name]
        except AlphaPoseTrtError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
        else:
            print(f"{spec.name}: {path}")
    return 1 if failed else 0
