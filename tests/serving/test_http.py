"""The HTTP service over a real connection (issue 11, "Done when"): a uvicorn started by the test on a
free loopback port, exactly as ``transrec serve`` starts it, and ``httpx`` requests over TCP. Every bad
input of ``http_cases`` is refused here too, concurrent writers never show readers a half-added catalogue,
a restart keeps the added items, and ``transrec serve`` itself starts, answers and stops on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("uvicorn")
import httpx

from transrec.cli.main import main
from transrec.serving.app import create_app
from transrec.serving.server import listen, url_of, uvicorn_server

from .exports import build_export
from .http_cases import HTTP_LIMITS, IMAGE_CASES, TEXT_CASES, bad_inputs, check_refusal, fingerprint, load


@contextlib.contextmanager
def serving(recommender) -> Iterator[httpx.Client]:
    """A uvicorn serving ``recommender`` on a free port of 127.0.0.1 in a thread, and a client of it."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn_server(create_app(recommender, HTTP_LIMITS), log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=url_of(sock), timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {kind: build_export(root, kind) for kind in ("text", "mom")}


@pytest.fixture(scope="module")
def text_server(exports):
    """One server over the text export for the module's read-only tests (bad inputs change nothing)."""
    recommender = load(exports["text"].directory)
    with serving(recommender) as client:
        yield client, recommender, exports["text"].directory


@pytest.fixture(scope="module")
def mom_server(exports):
    recommender = load(exports["mom"].directory)
    with serving(recommender) as client:
        yield client, recommender, exports["mom"].directory


def catalogue(recommender) -> list[str]:
    return recommender.recommend([], k=recommender.catalogue_size).items


def test_the_server_answers_on_loopback(text_server):
    client, recommender, _ = text_server
    assert client.base_url.host == "127.0.0.1" and client.base_url.port not in (None, 0)
    assert client.get("/health").json() == {"status": "ok", "catalogue": recommender.catalogue_size}
    history = catalogue(recommender)[:3]
    answer = client.post("/recommend", json={"history": history, "k": 5}).json()
    assert answer["items"] == recommender.recommend(history, k=5).items


@pytest.mark.parametrize("name", TEXT_CASES)
def test_every_bad_input_is_refused_over_http_and_changes_nothing(text_server, name, nothing_opened):
    client, recommender, directory = text_server
    known = catalogue(recommender)
    case = bad_inputs(known, reads_image=False)[name]
    before = fingerprint(client, directory, known[:3])
    check_refusal(client.request(**case.request), case)
    assert fingerprint(client, directory, known[:3]) == before


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_every_bad_image_is_refused_over_http_and_changes_nothing(mom_server, name, nothing_opened):
    client, recommender, directory = mom_server
    known = catalogue(recommender)
    case = bad_inputs(known, reads_image=True)[name]
    before = fingerprint(client, directory, known[:3])
    check_refusal(client.request(**case.request), case)
    assert fingerprint(client, directory, known[:3]) == before


def test_a_body_sent_in_chunks_is_cut_off_at_the_limit(text_server):
    client, _, _ = text_server

    def chunks():  # no Content-Length: the server counts what arrives
        for _ in range(17):  # 69,632 bytes: just over the 64,000 limit, so the client is done sending
            yield b" " * 4096
        yield b"{}"

    answer = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"] == "too_large"
    assert client.get("/health").status_code == 200  # and the server goes on answering


def test_a_slow_request_does_not_hold_up_the_others(text_server, monkeypatch):
    client, recommender, _ = text_server
    history = catalogue(recommender)[:2]
    started, release = threading.Event(), threading.Event()
    real = recommender.recommend_many  # /recommend answers through the batcher, which calls this

    def slow(*args, **kwargs):
        if not started.is_set():  # only the first call is held inside the model
            started.set()
            release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(recommender, "recommend_many", slow)
    answers = []
    waiting = threading.Thread(
        target=lambda: answers.append(client.post("/recommend", json={"history": history}).status_code)
    )
    waiting.start()
    try:
        assert started.wait(30)
        # the first request is still inside the model; others are answered meanwhile
        with httpx.Client(base_url=str(client.base_url), timeout=5) as other:
            assert other.get("/health").status_code == 200
            batch = other.post("/recommend/batch", json={"histories": [history]})
            assert batch.status_code == 200 and not release.is_set()
    finally:
        release.set()
        waiting.join(30)
    assert answers == [200]


def test_concurrent_adds_never_show_readers_a_half_added_catalogue(exports, tmp_path):
    recommender = load(exports["text"].directory, copy_to=tmp_path / "export")
    original = catalogue(recommender)
    history = original[:2]
    with serving(recommender) as client:
        base = client.post("/recommend", json={"history": history, "k": 1000}).json()
        baseline = dict(zip(base["items"], base["scores"]))
        url, problems, answers = str(client.base_url), [], []
        added = [f"new-{w}-{j}" for w in range(3) for j in range(4)]

        def writer(w: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                for j in range(4):
                    text = f"a new item number {w} {j}"
                    r = own.post("/items", json={"id": f"new-{w}-{j}", "text": text})
                    if r.status_code != 201:
                        problems.append(r.text)

        def reader() -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                while any(t.is_alive() for t in writers):
                    r = own.post("/recommend", json={"history": history, "k": 8})
                    if r.status_code != 200:
                        problems.append(r.text)
                    else:
                        answers.append(r.json())

        writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        readers = [threading.Thread(target=reader) for _ in range(4)]
        for t in writers + readers:
            t.start()
        for t in writers + readers:
            t.join(timeout=120)
        assert problems == []
        assert len(answers) >= 4
        print(
            "answers",
            len(answers),
            "with new items",
            sum(any(i in added for i in a["items"]) for a in answers),
        )
        for answer in answers:
            items, scores = answer["items"], answer["scores"]
            assert len(items) == 8 == len(set(items)) and scores == sorted(scores, reverse=True)
            assert set(items) <= set(original) | set(added)
            # Adding only inserts: the catalogue items keep their scores and their order among themselves.
            old = [i for i in items if i in baseline]
            assert old == base["items"][: len(old)]
            assert [s for i, s in zip(items, scores) if i in baseline] == pytest.approx(
                [baseline[i] for i in old]
            )
        assert client.get("/health").json()["catalogue"] == len(original) + len(added)
        assert all(client.get(f"/items/{i}").json()["added"] for i in added)


def test_a_restart_keeps_added_items_and_the_new_item_ranks_next_to_its_twin(exports, tmp_path):
    directory = tmp_path / "export"
    recommender = load(exports["text"].directory, copy_to=directory)
    history = catalogue(recommender)[:3]
    removed = catalogue(recommender)[-1]
    with serving(recommender) as client:
        top = client.post("/recommend", json={"history": history, "k": 5}).json()["items"][0]
        twin_text = client.get(f"/items/{top}").json()["text"]
        assert client.post("/items", json={"id": "twin", "text": twin_text}).status_code == 201
        assert client.delete(f"/items/{removed}").status_code == 200
        before = client.post("/recommend", json={"history": history, "k": 5}).json()
        assert set(before["items"][:2]) == {top, "twin"}  # the "Done when" example, over HTTP
    with serving(load(directory)) as client:  # a new process would load exactly this
        assert client.get("/items/twin").json() == {"id": "twin", "text": twin_text, "modality": "text",
                                                     "added": True}  # fmt: skip
        assert client.get(f"/items/{removed}").status_code == 404
        after = client.post("/recommend", json={"history": history, "k": 5}).json()
        assert after["items"] == before["items"]
        assert after["scores"] == pytest.approx(before["scores"], abs=1e-6)


# -- transrec serve --------------------------------------------------------------------------------------


@pytest.fixture
def no_server_start(monkeypatch):
    """``transrec serve`` called in process must refuse before its server starts: one that would start
    fails the test at once (instead of serving, and blocking the test, forever)."""
    import transrec.serving.server

    def refuse(*args, **kwargs):
        pytest.fail("transrec serve started a server where it had to refuse")

    monkeypatch.setattr(transrec.serving.server, "uvicorn_server", refuse)


def test_serve_refuses_a_missing_or_broken_export_before_starting(tmp_path, exports, capsys, no_server_start):
    assert main(["serve", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    assert "nowhere" in capsys.readouterr().err
    broken = tmp_path / "broken"
    load(exports["text"].directory, copy_to=broken)
    weights = next(p for p in broken.rglob("*.safetensors") if p.is_file())
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert main(["serve", str(broken), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transrec: error:") and weights.name in err and "Traceback" not in err


def test_serve_refuses_a_port_in_use(exports, capsys, no_server_start):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(exports["text"].directory), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_serve_encodes_adds_in_a_process_of_their_own_unless_told_not_to(
    exports, tmp_path, monkeypatch, capsys
):
    import transrec.serving.server
    from transrec.serving import Recommender

    started = []
    monkeypatch.setattr(Recommender, "start_encoder_process", lambda self, **options: started.append(options))

    def refuse(*args, **kwargs):
        raise transrec.serving.server.ListenError("the test stops here")

    monkeypatch.setattr(transrec.serving.server, "uvicorn_server", refuse)
    directory = str(exports["text"].directory)
    assert main(["serve", directory, "--port", "0", "--encode-in-process"]) == 2
    assert started == []
    assert main(["serve", directory, "--port", "0"]) == 2
    assert main(["serve", directory, "--port", "0", "--encoder-engine", "torch"]) == 2
    assert started == [{"torch_threads": 1, "engine": "auto"}, {"torch_threads": 1, "engine": "torch"}]
    assert capsys.readouterr().err.count("the test stops here") == 3
    # ONNX Runtime runs in the encoder process: asked for without one, refused before anything starts
    command = ["serve", directory, "--port", "0", "--encode-in-process", "--encoder-engine", "onnxruntime"]
    assert main(command) == 2
    assert len(started) == 2 and "--encode-in-process" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", directory, "--encoder-engine", "tensorrt"])
    # --onnx-cache: where the encoder process keeps its graph (none: nowhere); refused where unused
    started.clear()
    assert main(["serve", directory, "--port", "0", "--onnx-cache", str(tmp_path / "graphs")]) == 2
    assert main(["serve", directory, "--port", "0", "--onnx-cache", "None"]) == 2
    assert [options["onnx_cache"] for options in started] == [tmp_path / "graphs", None]
    monkeypatch.chdir(tmp_path)  # a relative folder is the one under the directory serve started in
    assert main(["serve", directory, "--port", "0", "--onnx-cache", "here"]) == 2
    assert started.pop()["onnx_cache"] == tmp_path / "here"
    for other in (["--encode-in-process"], ["--encoder-engine", "torch"]):
        assert main(["serve", directory, "--port", "0", "--onnx-cache", "x", *other]) == 2
        assert f"which {' '.join(other)} turns off" in capsys.readouterr().err
    assert len(started) == 2


def test_serve_passes_its_runtime_options_to_uvicorn_and_python(exports, monkeypatch, capsys):
    import transrec.serving.server
    from transrec.serving import Recommender

    monkeypatch.setattr(Recommender, "start_encoder_process", lambda self, **options: None)
    seen = []

    def refuse(*args, **kwargs):
        seen.append((kwargs["loop"], kwargs["http"], sys.getswitchinterval()))
        raise transrec.serving.server.ListenError("the test stops here")

    monkeypatch.setattr(transrec.serving.server, "uvicorn_server", refuse)
    previous = sys.getswitchinterval()
    directory = str(exports["text"].directory)
    try:
        assert main(["serve", directory, "--port", "0"]) == 2
        options = ["--http", "h11", "--loop", "asyncio", "--switch-interval-ms", "0.5"]
        assert main(["serve", directory, "--port", "0", *options]) == 2
    finally:
        sys.setswitchinterval(previous)
    assert seen == [("auto", "auto", previous), ("asyncio", "h11", pytest.approx(0.0005))]
    capsys.readouterr()
    for bad in (["--switch-interval-ms", "0"], ["--http", "gevent"]):
        with pytest.raises(SystemExit):
            main(["serve", directory, *bad])
        assert bad[1] in capsys.readouterr().err


def test_serve_starts_logs_its_url_answers_and_stops_cleanly_on_ctrl_c(exports, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    directory = load(exports["text"].directory, copy_to=tmp_path / "export").export_dir
    command = [sys.executable, "-m", "transrec", "serve", str(directory), "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
            found = re.search(r" at (http://127\.0\.0\.1:\d+);", line)
            if found:
                break
        assert found, "".join(lines)
        url = found.group(1)
        for _ in range(200):  # the URL is logged just before uvicorn starts accepting
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(url + "/health", timeout=5)
                break
            time.sleep(0.05)
        assert health.json()["status"] == "ok"
        # the item encoder runs in a second process, started with the service
        encoder = re.search(r"encoder process (\d+) ready", "".join(lines))
        assert encoder, "".join(lines)
        encoder_pid = int(encoder.group(1))
        assert os.path.exists(f"/proc/{encoder_pid}")
        added = httpx.post(url + "/items", json={"id": "new", "text": "a new film"}, timeout=60)
        assert added.status_code == 201, added.text
        assert httpx.get(url + "/items/new", timeout=30).json()["added"] is True
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        rest = process.stderr.read()
        assert "stopped" in rest and "Traceback" not in rest, rest
        assert not os.path.exists(f"/proc/{encoder_pid}")  # stopped and reaped with the service
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
