"""Export directories on disk: checked targets, atomic replacement, and a manifest with checksums.

Every writer in :mod:`lightning_nas.export` goes through :func:`check_target` (before any work)
and :func:`atomic_directory` (files are written and verified in a hidden sibling directory, then
moved into place in one step), and ends with :func:`write_manifest`. Readers call
:func:`read_manifest` and :func:`check_file`, so a truncated or corrupted file is named in a
one-line error before any deserialiser sees it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "ExportError", "atomic_directory", "check_file", "check_target", "read_manifest"]

#: The manifest every export carries: architecture, format, files with sizes and SHA-256.
MANIFEST = "arch.json"
_TMP, _OLD = ".tmp-", ".old-"


class ExportError(RuntimeError):
    """An export that does not reproduce the model it was made from, or files that cannot be read back."""


def check_target(directory: str | os.PathLike[str]) -> Path:
    """The absolute export directory, or a one-line ``ValueError`` if an export cannot go there.

    An existing directory is accepted only if it is empty or holds an earlier export (it has a
    manifest): anything else belongs to the user and is never replaced.

    Example:
        >>> import tempfile
        >>> file = tempfile.NamedTemporaryFile()
        >>> check_target(Path(file.name) / "export")
        Traceback (most recent call last):
        ...
        ValueError: cannot write an export to .../export: ... is a file, not a directory
    """
    target = Path(directory).expanduser().resolve()  # a link is followed: its target is what gets replaced
    ancestor = target if os.path.lexists(target) else target.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write an export to {target}: {ancestor} is a file, not a directory")
    if ancestor == target:
        if any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise ValueError(
                f"{target} exists and is not an export (no {MANIFEST}); remove it or choose another directory"
            )
        ancestor = target.parent
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write an export to {target}: {ancestor} is not writable")
    return target


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``target`` to write into; move it to ``target`` on success.

    An earlier export at ``target`` is replaced only when the block succeeds (in one atomic
    ``renameat2`` exchange on Linux, else two renames), and is left untouched if it raises. If the
    process dies, the sibling stays behind and is removed by the next export to ``target``.
    """
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP}{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        _sync(tmp)
        if not os.path.lexists(target):
            os.rename(tmp, target)
        elif _exchange(tmp, target):
            shutil.rmtree(tmp)  # now the previous export
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}{_OLD}{os.getpid()}-", dir=target.parent))
            os.rename(target, old / "export")
            os.rename(tmp, target)
            shutil.rmtree(old)
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for path in sorted(created, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise


def _clean_leftovers(target: Path) -> None:
    """Remove the siblings of exports whose process died; restore a previous export caught mid-swap."""
    for sibling in target.parent.iterdir():
        kind = next((k for k in (_TMP, _OLD) if sibling.name.startswith(f".{target.name}{k}")), None)
        pid = sibling.name[len(target.name) + 1 + len(kind or "") :].split("-", 1)[0]
        if kind is None or not pid.isdigit() or _alive(int(pid)):
            continue
        previous = sibling / "export"
        if kind == _OLD and previous.is_dir() and not os.path.lexists(target):
            os.rename(previous, target)
        shutil.rmtree(sibling, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot move {a} to {b}: {os.strerror(code)}")


def _sync(directory: Path) -> None:
    """Flush the written files, so a power loss after the rename cannot leave empty files behind."""
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    if os.name == "posix":
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, meta: Mapping[str, Any]) -> None:
    """Write :data:`MANIFEST`: ``meta`` plus the size and SHA-256 of every file in ``directory``."""
    files = {
        path.relative_to(directory).as_posix(): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({**meta, "files": files}, indent=2))


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an export directory; a one-line :class:`ExportError` if there is none or it is damaged."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ExportError(f"{directory} is not a directory")
    if not path.is_file():
        raise ExportError(f"{directory} is not an export of lightning_nas: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{path} is damaged or truncated: {err}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ExportError(f"{path} is not an export manifest (no 'files' entry)")
    return manifest


def check_file(directory: str | os.PathLike[str], name: str, manifest: Mapping[str, Any]) -> Path:
    """``directory / name`` after checking it against the manifest's size and checksum."""
    path = Path(directory) / name
    entry = manifest["files"].get(name)
    if entry is None:
        raise ExportError(f"{name} is not part of the export in {directory} (see its {MANIFEST})")
    if not path.is_file():
        raise ExportError(f"{path} is missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ExportError(f"{path} is truncated or damaged: {size:,} bytes, {entry['bytes']:,} written")
    if _sha256(path) != entry["sha256"]:
        raise ExportError(f"{path} is damaged: its SHA-256 differs from the one in {MANIFEST}")
    return path
