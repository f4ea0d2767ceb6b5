"""Added items encoded in a process of their own (``serving.encoder_process``; issue 11, add -> visible):
the same vectors as in the serving process, concurrent adds answered by one forward pass, a killed
process replaced without failing the add, a process that keeps dying refused with a 4xx that changes
nothing, and the application (in process and on a real uvicorn) starting and stopping it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import pytest
import torch

from transrec.serving.encoder_process import EncoderProcess, EncoderStartError

from .exports import build_export
from .http_cases import HTTP_LIMITS, fingerprint, load, png


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {kind: build_export(root, kind) for kind in ("text", "mom", "id")}


@pytest.fixture
def writable(exports, tmp_path):
    """A recommender over a fresh copy of an export (``writable("mom")``), its encoder process stopped
    at the end."""
    made = []

    def make(kind: str = "text"):
        recommender = load(exports[kind].directory, copy_to=tmp_path / kind)
        made.append(recommender)
        return recommender

    yield make
    for recommender in made:
        recommender.stop_encoder_process()


@pytest.fixture(scope="module")
def text_process(exports, tmp_path_factory):
    """A recommender over a copy of the text export with its encoder process started on the default
    engine (shared: one start for the tests that only encode)."""
    recommender = load(exports["text"].directory, copy_to=tmp_path_factory.mktemp("shared") / "text")
    recommender.start_encoder_process()
    yield recommender
    recommender.stop_encoder_process()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


RECORDS = [
    {"text": "a quiet film about the sea"},
    {"text": "space opera with robots, part two"},
    {"text": "x"},
]


@pytest.mark.parametrize(
    ("kind", "engine"), [("text", "default"), ("text", "torch"), ("mom", "onnxruntime"), ("mom", "torch")]
)
def test_the_process_encodes_what_the_serving_process_encodes(writable, text_process, kind, engine):
    """Bit for bit on torch; to float32 rounding on ONNX Runtime (the default where it is installed)."""
    if engine == "default":
        recommender = text_process
    else:
        recommender = writable(kind)
        recommender.start_encoder_process(engine=engine)
    records = RECORDS + (
        [{"image": png(colour=(10, 200, 30))}, {"image": png(40, 20)}] if kind == "mom" else []
    )
    prepared = recommender._preprocessor.prepare(records)
    here = recommender._encode(prepared)
    process = recommender.start_encoder_process()
    expected_engine = (
        "torch" if engine == "torch" or importlib.util.find_spec("onnxruntime") is None else "onnxruntime"
    )
    assert process.engine_choice.engine == expected_engine
    assert recommender.metadata()["encoder"] == {"where": "encoder process", **asdict(process.engine_choice)}
    requests, calls = process.requests, process.calls
    there = recommender._encode(prepared, process)
    assert there.shape == here.shape and there.dtype == torch.float32
    torch.testing.assert_close(there, here, rtol=0, atol=0 if expected_engine == "torch" else 1e-6)
    assert (process.requests, process.calls) == (requests + 1, calls + 1)


def test_content_records_of_histories_are_encoded_by_the_process_too(exports, text_process):
    """A history that mixes catalogue ids and content records (TransRec): its records go to the encoder
    process (off the serving process's GIL), with the recommendation the serving process would give."""
    here = load(exports["text"].directory)  # the same catalogue, no encoder process
    catalogue = here.recommend([], k=3).items
    history = [catalogue[0], {"text": "a quiet film about the sea"}, catalogue[1], {"text": "robots"}]
    expected = here.recommend(history, k=5)
    process = text_process.start_encoder_process()
    requests, calls = process.requests, process.calls
    got = text_process.recommend(history, k=5)
    assert (process.requests, process.calls) == (requests + 1, calls + 1)  # both records, one pass
    assert got.items == expected.items and got.used_history == expected.used_history == 4
    torch.testing.assert_close(torch.tensor(got.scores), torch.tensor(expected.scores), rtol=0, atol=1e-5)


def test_an_engine_that_cannot_run_is_a_start_error_saying_why(exports):
    """``onnxruntime`` asked for an ID model (no text backbone): the start fails, naming the reason."""
    with pytest.raises(EncoderStartError, match="no text backbone"):
        EncoderProcess(exports["id"].directory / "model", lambda items: None, engine="onnxruntime")
    with pytest.raises(ValueError, match="engine must be one of"):
        EncoderProcess(exports["id"].directory / "model", lambda items: None, engine="fast")


def test_concurrent_calls_are_answered_together_each_with_its_own_rows(text_process):
    recommender = text_process
    process = recommender.start_encoder_process()
    texts = [f"film number {i} of the season" for i in range(8)]
    expected = recommender._encode(recommender._preprocessor.prepare([{"text": t} for t in texts]))
    results: dict[int, torch.Tensor] = {}

    def call(i: int) -> None:
        results[i] = process.encode(recommender._preprocessor.prepare([{"text": texts[i]}]))

    before = process.requests
    with process._lock:  # a request in progress: the eight calls queue up behind it
        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(process._queue) < 8:
            assert time.monotonic() < deadline, "the calls did not queue"
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=60)
    assert process.requests == before + 1  # one forward pass answered all eight
    for i in range(8):
        assert results[i].shape == (1, expected.shape[1])
        # batched with longer texts (padding), so equal up to float rounding, not bit for bit
        torch.testing.assert_close(results[i][0], expected[i], rtol=0, atol=1e-5)


def test_a_killed_process_is_replaced_the_add_succeeds_and_the_onnx_graph_kept_is_reused(writable):
    """The replacement loads the ONNX graph that the first process kept in the export's cache/ (where
    ONNX Runtime is installed; on torch, the replacement alone is tested)."""
    onnx = importlib.util.find_spec("onnxruntime") is not None
    recommender = writable("text")
    process = recommender.start_encoder_process(engine="onnxruntime" if onnx else "torch")
    if onnx:
        assert process.engine_choice.detail.endswith("0 of 1 graph(s) from the cache")
        assert len(list((recommender._bundle.directory / "cache").glob("text-backbone-*.onnx"))) == 1
    first = process.pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(first) and time.monotonic() < deadline:
        time.sleep(0.01)
    history = recommender.recommend([], k=3).items
    assert recommender.add_items([{"id": "after-kill", "text": "a film added after the crash"}]) == [
        "after-kill"
    ]
    assert process.starts == 2 and process.pid not in (None, first)
    assert "after-kill" in recommender.recommend(history, k=recommender.catalogue_size).items
    if onnx:
        assert process.engine_choice.detail.endswith("1 of 1 graph(s) from the cache")


@pytest.mark.slow  # three process starts: 36 s at a load average of 10
def test_a_process_that_dies_on_every_try_refuses_the_add_over_http_and_changes_nothing(
    writable, monkeypatch
):
    fastapi = pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from transrec.serving.app import create_app

    assert fastapi
    recommender = writable("text")
    directory = recommender.export_dir
    real_request = EncoderProcess._request

    def dies(self, arrays):  # the process dies while it encodes (as on an item that crashes it)
        os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=10)
        return real_request(self, arrays)

    history = recommender.recommend([], k=3).items
    with TestClient(create_app(recommender, HTTP_LIMITS, encoder_process=True)) as client:
        process = recommender._encoder_process
        before = fingerprint(client, directory, history)
        monkeypatch.setattr(EncoderProcess, "_request", dies)
        answer = client.post("/items", json={"id": "doomed", "text": "a film"})
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert (
            body["error"] == "encode_failed"
            and "twice" in body["message"]
            and "nothing was added" in body["message"]
        )
        assert process.starts == 2  # replaced once, then given up
        assert fingerprint(client, directory, history) == before
        assert client.get("/items/doomed").status_code == 404
        monkeypatch.setattr(EncoderProcess, "_request", real_request)
        assert (
            client.post("/items", json={"id": "fine", "text": "a film"}).status_code == 201
        )  # a new process
        assert process.starts == 3 and client.get("/items/fine").status_code == 200


def test_the_application_starts_and_stops_the_process_and_adds_go_through_it(writable):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from transrec.serving.app import create_app

    recommender = writable("text")
    history = recommender.recommend([], k=3).items
    with TestClient(create_app(recommender, HTTP_LIMITS, encoder_process=True)) as client:
        process = recommender._encoder_process
        pid = process.pid
        assert pid is not None and alive(pid)
        top = client.post("/recommend", json={"history": history, "k": 3}).json()["items"][0]
        text = client.get(f"/items/{top}").json()["text"]
        assert client.post("/items", json={"id": "twin", "text": text}).status_code == 201
        assert process.calls == 1  # encoded there, not here
        prepared = recommender._preprocessor.prepare([{"text": "late"}])
        after = client.post("/recommend", json={"history": history, "k": 3}).json()["items"]
        assert set(after[:2]) == {top, "twin"}  # visible in the very next request, next to its twin
    assert recommender._encoder_process is None
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pid)
    with pytest.raises(EncoderStartError, match="stopped"):  # a late add is refused, none started
        process.encode(prepared)
    assert process.starts == 1


def test_a_model_that_does_not_load_is_a_start_error_naming_it(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(EncoderStartError, match=r"could not load .*model"):
        EncoderProcess(tmp_path / "model", lambda items: None, start_timeout_s=120)


def test_the_process_exits_when_the_serving_process_is_killed(exports):
    """No orphan holding a model's memory: a serving process killed outright closes its end of the socket,
    and the encoder process ends on that (on torch: the engine does not matter here, and no export)."""
    model_dir = exports["text"].directory / "model"
    script = (
        "import sys\n"
        "from transrec.serving.encoder_process import EncoderProcess\n"
        f"process = EncoderProcess({str(model_dir)!r}, lambda items: None, engine='torch')\n"
        "print(process.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        pid = int(parent.stdout.readline())
        assert alive(pid)
    finally:
        parent.kill()
        parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
