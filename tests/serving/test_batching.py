"""Micro-batching of ``POST /recommend`` (``transrec.serving.batching``): concurrent requests share one
``recommend_many`` call, yet each gets exactly the answer (or the error) it would get alone; the batcher
stops with the application; and ``transrec serve``'s options reach it (torch threads, index kinds)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from transrec.config import ConfigError
from transrec.serving.batching import BatcherClosedError, BatchingConfig, MicroBatcher


class Echo:
    """A ``recommend_many`` stand-in: the answer to a history is ``(tuple(history), k, exclude_seen)``; a
    history holding ``"bad"`` fails the whole call, as an unknown id fails ``recommend_many``."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # the number of histories of each call
        self.lock = threading.Lock()

    def __call__(self, histories, k, exclude_seen):
        with self.lock:
            self.calls.append(len(histories))
        if any("bad" in h for h in histories):
            raise ValueError("unknown item 'bad'")
        return [(tuple(h), k, exclude_seen) for h in histories]


async def submit_all(batcher: MicroBatcher, requests: list[tuple[list[str], int, bool]]) -> list:
    """Submit ``requests`` at once (as concurrent clients would); each outcome is an answer or an error."""
    try:
        return await asyncio.gather(*(batcher.submit(*r) for r in requests), return_exceptions=True)
    finally:
        await asyncio.wait_for(batcher.aclose(), 10)  # a worker that never stops fails, not hangs


def test_concurrent_requests_share_calls_and_each_gets_its_own_answer():
    echo = Echo()
    batcher = MicroBatcher(echo, BatchingConfig(max_batch_size=8, max_wait_ms=50))
    requests = [([f"item{j}"], 1 + j % 2, j % 3 == 0) for j in range(20)]
    outcomes = asyncio.run(submit_all(batcher, requests))
    assert outcomes == [(tuple(h), k, e) for h, k, e in requests]
    # 20 requests in batches of at most 8, each split by (k, exclude_seen) into at most 4 calls
    assert batcher.stats.requests == 20 and batcher.stats.largest == 8 and batcher.stats.batches == 3
    assert max(echo.calls) > 1 and sum(echo.calls) == 20 and len(echo.calls) < 20


def test_one_bad_request_gets_its_error_and_the_rest_of_its_batch_their_answers():
    echo = Echo()
    batcher = MicroBatcher(echo, BatchingConfig(max_batch_size=64, max_wait_ms=50))
    requests = [([f"item{j}"], 5, True) for j in range(6)]
    requests[3] = (["item3", "bad"], 5, True)
    outcomes = asyncio.run(submit_all(batcher, requests))
    assert isinstance(outcomes[3], ValueError) and "bad" in str(outcomes[3])
    assert [o for j, o in enumerate(outcomes) if j != 3] == [
        (tuple(h), 5, True) for j, (h, _, _) in enumerate(requests) if j != 3
    ]
    assert echo.calls == [6, 1, 1, 1, 1, 1, 1]  # the batch failed, then each request alone
    assert batcher.stats.retried == 6


def test_an_idle_batcher_answers_a_lone_request_after_at_most_its_wait():
    echo = Echo()
    batcher = MicroBatcher(echo, BatchingConfig(max_batch_size=64, max_wait_ms=20))

    async def one() -> tuple[object, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        answer = await batcher.submit(["x"], 3, False)
        elapsed = loop.time() - start
        await asyncio.wait_for(batcher.aclose(), 10)
        return answer, elapsed

    answer, elapsed = asyncio.run(one())
    assert answer == (("x",), 3, False)
    assert 0.015 < elapsed < 2.0  # it waited for company, and not forever


def batch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("transrec-batch")}


def test_a_closed_batcher_refuses_requests_and_its_thread_ends():
    before = batch_threads()
    batcher = MicroBatcher(Echo())

    async def run() -> None:
        assert await batcher.submit(["a"], 1, True) == (("a",), 1, True)
        await asyncio.wait_for(batcher.aclose(), 10)  # a worker that never stops fails, not hangs
        with pytest.raises(BatcherClosedError, match="shutting down"):
            await batcher.submit(["a"], 1, True)

    asyncio.run(run())
    assert batcher.closed
    assert batch_threads() <= before


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch_size": 0}, {"max_batch_size": 2.5}, {"max_wait_ms": -1}, {"max_wait_ms": float("inf")}],
)
def test_batching_config_refuses_bad_values_naming_them(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        BatchingConfig(**kwargs)


# -- through the application, with a real recommender ----------------------------------------------------

fastapi = pytest.importorskip("fastapi")
pytest.importorskip("multipart")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from transrec.serving.app import create_app  # noqa: E402

from .exports import build_export  # noqa: E402
from .http_cases import HTTP_LIMITS, load  # noqa: E402


@pytest.fixture(scope="module")
def recommender(tmp_path_factory):
    return load(build_export(tmp_path_factory.mktemp("exports"), "text").directory)


def test_concurrent_http_requests_are_batched_and_answer_as_recommend_does(recommender):
    known = recommender.recommend([], k=recommender.catalogue_size).items
    histories = [known[j : j + 1 + j % 3] for j in range(12)]
    histories[5] = [known[0], "no-such-item"]  # a bad request in the middle of the batch
    histories[7] = [known[2], {"text": "a brand new item"}]  # content records batch too
    app = create_app(recommender, HTTP_LIMITS, BatchingConfig(max_batch_size=64, max_wait_ms=100))

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            try:
                return await asyncio.gather(
                    *(client.post("/recommend", json={"history": h, "k": 4}) for h in histories)
                )
            finally:
                await asyncio.wait_for(app.state.batcher.aclose(), 10)  # the transport runs no lifespan

    answers = asyncio.run(post_all())
    assert answers[5].status_code == 422 and answers[5].json()["error"] == "unknown_items"
    assert "no-such-item" in answers[5].json()["message"]
    for j, (history, answer) in enumerate(zip(histories, answers, strict=True)):
        if j == 5:
            continue
        assert answer.status_code == 200, answer.text
        alone = recommender.recommend(history, k=4)
        assert answer.json()["items"] == alone.items
        assert answer.json()["scores"] == pytest.approx(alone.scores, abs=1e-5)
    assert app.state.batcher.stats.largest > 1  # the requests did share a batch


def test_the_application_lifespan_stops_the_batcher(recommender):
    before = batch_threads()
    app = create_app(recommender, HTTP_LIMITS)
    with TestClient(app) as client:
        assert client.post("/recommend", json={"history": [], "k": 2}).status_code == 200
        assert not app.state.batcher.closed
        assert batch_threads() > before  # the batch thread ran
    assert app.state.batcher.closed
    assert batch_threads() <= before


# -- transrec serve's options ----------------------------------------------------------------------------


def test_serve_sets_torch_threads_before_loading_and_offers_every_index_kind(monkeypatch, tmp_path):
    from transrec.cli.main import main
    from transrec.serving import Recommender
    from transrec.serving.retrieval import INDEXES

    seen = {}

    def fake_load(export_dir, index="exact", **kwargs):
        seen.update(threads=torch.get_num_threads(), index=index)
        raise ConfigError("stop here: the test only needs what serve set up before loading")

    before = torch.get_num_threads()
    monkeypatch.setattr(Recommender, "load", staticmethod(fake_load))
    try:
        assert main(["serve", str(tmp_path), "--torch-threads", "3", "--index", "faiss-ivf"]) == 2
        assert seen == {"threads": 3, "index": "faiss-ivf"}
        assert main(["serve", str(tmp_path)]) == 2
        assert seen == {"threads": 1, "index": "exact"}  # the defaults
        assert "faiss-ivf" in INDEXES.names()
        for kind in INDEXES.names():  # every kind the registry has is accepted and reaches the load
            assert main(["serve", str(tmp_path), "--index", kind]) == 2 and seen["index"] == kind
    finally:
        torch.set_num_threads(before)
    for bad in (["--index", "no-such-index"], ["--torch-threads", "0"], ["--batch-wait-ms", "-1"]):
        with pytest.raises(SystemExit):
            main(["serve", str(tmp_path), *bad])


def test_serve_passes_index_parameters_to_the_load_and_refuses_malformed_ones(monkeypatch, tmp_path, capsys):
    from transrec.cli.main import main
    from transrec.serving import Recommender

    seen = {}

    def fake_load(export_dir, index="exact", index_parameters=None, **kwargs):
        seen.update(index=index, parameters=index_parameters)
        raise ConfigError("stop here: the test only needs what serve passes to the load")

    monkeypatch.setattr(Recommender, "load", staticmethod(fake_load))
    args = ["--index", "faiss-pq", "--index-param", "refine=64", "--index-param", " m = none"]
    assert main(["serve", str(tmp_path), *args, "--index-param", "seed=3"]) == 2
    assert seen == {"index": "faiss-pq", "parameters": {"refine": 64, "m": None, "seed": 3}}
    assert type(seen["parameters"]["refine"]) is int  # an index refuses 64.0 where it takes an integer
    assert main(["serve", str(tmp_path), "--index-param", "x=0.5", "--index-param", "y=1e3"]) == 2
    assert seen["parameters"] == {"x": 0.5, "y": 1000.0}
    assert main(["serve", str(tmp_path), "--index", "faiss-hnsw", "--index-param", "storage=flat"]) == 2
    assert seen["parameters"] == {"storage": "flat"}
    assert main(["serve", str(tmp_path)]) == 2 and seen["parameters"] == {}
    seen.clear()
    assert main(["serve", str(tmp_path), "--index-param", "refine=1", "--index-param", "refine=2"]) == 2
    assert "--index-param given more than once for refine" in capsys.readouterr().err and seen == {}
    for bad in ("refine", "=3", "1x=3"):
        with pytest.raises(SystemExit):
            main(["serve", str(tmp_path), "--index-param", bad])
        assert "must be NAME=VALUE" in capsys.readouterr().err


def test_serve_freezes_what_it_loaded_before_serving(monkeypatch, tmp_path):
    """The loaded model's objects are moved out of the collector's reach before the first request (a full
    collection walking them was the load test's p99)."""
    import gc
    import types

    import transrec.serving.app as app_module
    import transrec.serving.server as server_module
    from transrec.cli.main import main
    from transrec.serving import Recommender

    frozen_at_run = []

    class FakeServer:
        def run(self, sockets):
            frozen_at_run.append(gc.get_freeze_count())

    fake = types.SimpleNamespace(
        catalogue_size=3,
        limits=None,
        start_encoder_process=lambda **options: None,
        stop_encoder_process=lambda: None,
    )
    monkeypatch.setattr(Recommender, "load", staticmethod(lambda *args, **kwargs: fake))
    monkeypatch.setattr(app_module, "create_app", lambda *args, **kwargs: object())
    monkeypatch.setattr(server_module, "uvicorn_server", lambda *args, **kwargs: FakeServer())
    gc.unfreeze()
    try:
        assert main(["serve", str(tmp_path), "--port", "0", "--quiet"]) == 0
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
    assert frozen_at_run and frozen_at_run[0] > 0
