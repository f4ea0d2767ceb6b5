import pytest

from transrec.data.movielens import fetch_ml100k


@pytest.fixture(scope="session")
def ml100k_root(tmp_path_factory):
    """A data root holding the real MovieLens-100K, fetched once per test session (GroupLens, or the
    recbole wheel from PyPI where GroupLens cannot be reached)."""
    root = tmp_path_factory.mktemp("transrec_home")
    fetch_ml100k(root, timeout=5)
    return root
