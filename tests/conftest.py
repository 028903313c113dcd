from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator

import pytest
import torch

from tests.postgres import PostgresUnavailable, postgres_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
logging.getLogger("optuna").setLevel(logging.WARNING)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
# The test models are tiny: one thread is faster than two and results do not depend on the core count.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server of its own on a free port of 127.0.0.1, for the session (skips with the
    reason only where it cannot start)."""
    try:
        with postgres_server(tmp_path_factory.mktemp("postgres")) as url:
            yield url
    except PostgresUnavailable as err:
        pytest.skip(str(err))
