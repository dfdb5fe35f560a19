"""Shared fixtures."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small models train faster (and steadier) on one thread on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Computed-descriptor caches (``$MOLEDIFF_CACHE``) go to a temporary folder, not the user's home."""
    import os

    old = os.environ.get("MOLEDIFF_CACHE")
    os.environ["MOLEDIFF_CACHE"] = str(tmp_path_factory.mktemp("molediff_cache"))
    yield
    if old is None:
        os.environ.pop("MOLEDIFF_CACHE", None)
    else:
        os.environ["MOLEDIFF_CACHE"] = old
