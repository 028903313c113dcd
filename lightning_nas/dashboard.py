"""Open the project's studies in optuna-dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ARTIFACT_DIR", "resolve_storage", "run_dashboard"]

#: Folder, next to a SQLite study file, where exported models are stored as Optuna artifacts.
ARTIFACT_DIR = "artifacts"
_SQLITE_HEADER = b"SQLite format 3\x00"


def resolve_storage(storage: str) -> str:
    """A storage URL from a URL or a path to a SQLite file (``nas.db`` -> ``sqlite:///.../nas.db``).

    Raises:
        FileNotFoundError: if ``storage`` is a path that does not exist.
        ValueError: if it is a file but not a SQLite database.
    """
    if "://" in storage:
        return storage
    path = Path(storage)
    if path.is_dir():
        path = path / "nas.db"
    if not path.exists():
        raise FileNotFoundError(f"no study storage at {path}; pass a storage URL or the path of a nas.db file")
    with path.open("rb") as file:
        header = file.read(len(_SQLITE_HEADER))
    if header != _SQLITE_HEADER:  # SQLite would fail later, deep in the dashboard, with a misleading commit error
        raise ValueError(f"{path} is not a SQLite study database (a nas.db file written by a search)")
    return f"sqlite:///{path.resolve()}"


def _default_artifact_dir(storage_url: str) -> Path | None:
    if not storage_url.startswith("sqlite:///"):
        return None
    folder = Path(storage_url[len("sqlite:///") :]).parent / ARTIFACT_DIR
    return folder if folder.is_dir() else None


def run_dashboard(storage: str, host: str = "127.0.0.1", port: int = 8080, artifact_dir: str | None = None) -> None:
    """Serve optuna-dashboard for ``storage`` (blocks until interrupted).

    The artifact folder that :class:`~lightning_nas.callbacks.OneShotSearch` writes next to a
    SQLite study is found automatically, so exported models can be downloaded from the trial page.
    """
    try:
        import optuna_dashboard
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ImportError("the dashboard needs optuna-dashboard: pip install 'lightning-nas[dashboard]'") from None
    from optuna.artifacts import FileSystemArtifactStore

    url = resolve_storage(storage)
    folder = Path(artifact_dir) if artifact_dir else _default_artifact_dir(url)
    artifact_store: Any = FileSystemArtifactStore(str(folder)) if folder else None
    print(f"optuna-dashboard on http://{host}:{port} for {url}", flush=True)
    optuna_dashboard.run_server(url, host=host, port=port, artifact_store=artifact_store)
