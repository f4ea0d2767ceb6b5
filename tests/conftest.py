import socket
import subprocess

import pytest

from transrec.data.movielens import fetch_ml100k

from .fixtures_movielens import write_ml100k_standin


@pytest.fixture(scope="session")
def ml100k_root(tmp_path_factory):
    """A data root (``$TRANSREC_HOME`` layout) holding a generated MovieLens-100K stand-in
    (``tests/fixtures_movielens.py``) where ``fetch_ml100k`` finds it already fetched: never downloads."""
    root = tmp_path_factory.mktemp("transrec_home")
    write_ml100k_standin(root)
    return root


@pytest.fixture(scope="session")
def real_ml100k_root(tmp_path_factory):
    """A data root holding the real MovieLens-100K, fetched once per test session (GroupLens, or the
    recbole wheel from PyPI where GroupLens cannot be reached); for ``slow`` tests only."""
    root = tmp_path_factory.mktemp("transrec_home_real")
    fetch_ml100k(root, timeout=5)
    return root


@pytest.fixture
def offline(monkeypatch):
    """No network for the test: host names other than the local host do not resolve, internet sockets
    refuse to connect and no subprocess (``pip download``) may start. Each attempt raises ``OSError``
    where it is made and is recorded; the test fails at teardown if any was made, even when the code
    under test caught the error and carried on. Yields the list of attempts."""
    attempts: list[str] = []
    connect, resolve = socket.socket.connect, socket.getaddrinfo

    def refuse_resolve(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            attempts.append(f"resolve {host}")
            raise socket.gaierror(f"network disabled in this test (resolve {host})")
        return resolve(host, *args, **kwargs)

    def refuse_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"connect to {address}")
            raise OSError(f"network disabled in this test (connect to {address})")
        return connect(self, address)

    def refuse_subprocess(args, *_, **__):
        attempts.append(f"subprocess {args}")
        raise OSError(f"subprocesses disabled in this test ({args})")

    monkeypatch.setattr(socket, "getaddrinfo", refuse_resolve)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    monkeypatch.setattr(subprocess, "Popen", refuse_subprocess)
    yield attempts
    assert not attempts, f"the test used the network or a subprocess: {attempts}"
