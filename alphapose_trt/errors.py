"""User-facing errors.

Anything a user can cause (a bad file, a wrong flag, a mismatched engine) raises
`AlphaPoseTrtError` with a one-line message naming the file and what is wrong; the CLI prints
that line and exits non-zero instead of showing a traceback from deep inside.
"""

from __future__ import annotations


class AlphaPoseTrtError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


class MissingDependencyError(AlphaPoseTrtError):
    """An optional dependency is needed for what was asked; the message says what to install."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency late, or say which extra installs it.

    Why: heavy libraries (onnxruntime, tensorrt, pycocotools) are optional extras, and a user
    who never exports to ONNX must not need them.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package: pip install 'alphapose-trt[{extra}]' ({exc})"
        ) from exc


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception as one short line: its first message line, with the type unless it is ours.

    Why: third-party failures (a backend that cannot build, a decoder library) are reported inside
    our own one-line messages and tables, never as multi-line tracebacks.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = "" if isinstance(exc, AlphaPoseTrtError) else f"{type(exc).__name__}: "
    return (name + text)[:limit] or type(exc).__name__
