"""The HTTP service in process (FastAPI's test client; issue 11, items 4 and 5): each endpoint against the
Python API it serves, every bad input refused with its 4xx and the state unchanged, a new item that is
recommended from the next request on, and the generated API docs.

The test client re-raises any exception that reaches the server's error handler, so a bad input that
would have become a 500 fails its test here."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient

from transrec.config import ConfigError
from transrec.serving.app import HttpLimits, create_app
from transrec.serving.errors import CONTENT_REASONS, ContentError
from transrec.serving.http_errors import user_error_response

from .exports import build_export
from .http_cases import (
    HTTP_LIMITS,
    IMAGE_CASES,
    TEXT_CASES,
    b64,
    bad_inputs,
    check_refusal,
    fingerprint,
    load,
    png,
)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The text and mom exports of the tiny synthetic world, built once for the module (read only)."""
    root = tmp_path_factory.mktemp("exports")
    return {kind: build_export(root, kind) for kind in ("text", "mom")}


@pytest.fixture(scope="module")
def shared(exports):
    """A client over the text export, for tests that must not change it (the bad inputs)."""
    export = exports["text"]
    recommender = load(export.directory)
    with TestClient(create_app(recommender, HTTP_LIMITS)) as client:
        yield client, recommender, export.directory


@pytest.fixture
def fresh(exports, tmp_path):
    """A client over a fresh copy of an export (``fresh("mom")``), for tests that add or remove items."""
    clients = []

    def make(kind: str = "text"):
        recommender = load(exports[kind].directory, copy_to=tmp_path / kind)
        client = TestClient(create_app(recommender, HTTP_LIMITS))
        clients.append(client)
        return client, recommender, tmp_path / kind

    yield make
    for client in clients:
        client.close()


def catalogue(recommender) -> list[str]:
    return recommender.recommend([], k=recommender.catalogue_size).items  # every item, most popular first


# -- every bad input: its 4xx, and nothing changed ---------------------------------------------------------


@pytest.mark.parametrize("name", TEXT_CASES)
def test_a_bad_input_is_refused_with_its_status_and_changes_nothing(shared, name, nothing_opened):
    client, recommender, directory = shared
    known = catalogue(recommender)
    case = bad_inputs(known, reads_image=False)[name]
    before = fingerprint(client, directory, known[:3])
    check_refusal(client.request(**case.request), case)
    assert fingerprint(client, directory, known[:3]) == before


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_a_bad_image_is_refused_with_its_status_and_changes_nothing(fresh, name, nothing_opened):
    client, recommender, directory = fresh("mom")
    known = catalogue(recommender)
    case = bad_inputs(known, reads_image=True)[name]
    before = fingerprint(client, directory, known[:3])
    check_refusal(client.request(**case.request), case)
    assert fingerprint(client, directory, known[:3]) == before


def test_an_oversized_upload_is_read_no_further_than_the_limit_and_never_reaches_the_model(
    fresh, monkeypatch
):
    client, recommender, _ = fresh("text")
    calls = []
    monkeypatch.setattr(recommender, "add_items", lambda *args, **kwargs: calls.append(args))
    limit = recommender.limits.max_image_bytes
    upload = {"image": ("big.png", b"\x89PNG" + bytes(limit), "image/png")}
    answer = client.post("/items", data={"id": "big"}, files=upload)
    assert answer.status_code == 413 and f"{limit:,} bytes" in answer.json()["message"]
    assert calls == []  # refused by the HTTP layer while reading, before any model work


@pytest.mark.parametrize("field", ["max_k", "max_batch", "max_id_chars", "max_body_bytes"])
def test_limits_below_one_are_refused_naming_the_limit(field):
    with pytest.raises(ConfigError, match=f"HttpLimits.{field} must be"):
        HttpLimits(**{field: 0})
    assert HttpLimits().body_bytes(3_000) == 4_000 + 1024 * 1024  # base64 of one image + 1 MiB
    assert HttpLimits(max_body_bytes=10).body_bytes(3_000) == 10


@pytest.mark.parametrize("reason", CONTENT_REASONS)
def test_each_content_refusal_of_the_model_has_its_status(reason):
    # The HTTP layer refuses oversized images itself, so the model's own "too_large" is reached only by
    # a caller with other limits; its status is checked here, with every other reason's.
    status, body = user_error_response(ContentError(reason, "the problem", "item 'x'"))
    assert status == (413 if reason == "too_large" else 422)
    assert body == {"error": reason, "message": "item 'x': the problem"}


def test_an_over_long_history_uses_the_most_recent_and_says_so(shared):
    client, recommender, _ = shared
    known = catalogue(recommender)
    history = known[: recommender.max_len + 3]
    answer = client.post("/recommend", json={"history": history, "k": 5})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["used_history"], body["truncated"]) == (recommender.max_len, 3)
    assert body["note"] == (
        f"the 3 oldest of {len(history)} history items were dropped: the model reads the most recent "
        f"{recommender.max_len}"
    )
    # what was used is the most recent max_len: the same answer as for those alone, but for exclusion
    recent = client.post("/recommend", json={"history": history, "k": 5, "exclude_seen": False}).json()
    alone = client.post("/recommend", json={"history": history[3:], "k": 5, "exclude_seen": False}).json()
    assert recent["items"] == alone["items"]


# -- the endpoints, against the Python API -----------------------------------------------------------------


def test_recommend_answers_what_the_python_api_answers(shared):
    client, recommender, _ = shared
    known = catalogue(recommender)
    history = [known[4], known[1], {"text": "a brand new item"}]
    answer = client.post("/recommend", json={"history": history, "k": 6})
    assert answer.status_code == 200
    expected = recommender.recommend(history, k=6)
    body = answer.json()
    assert body["items"] == expected.items and body["scores"] == pytest.approx(expected.scores)
    assert body["popular"] is False and body["note"] is None and len(body["items"]) == 6
    assert not {known[4], known[1]} & set(body["items"])  # exclude_seen by default
    kept = client.post("/recommend", json={"history": history, "k": 6, "exclude_seen": False}).json()
    assert kept["items"] == recommender.recommend(history, k=6, exclude_seen=False).items


def test_an_empty_history_gets_the_popular_items_flagged(shared):
    client, recommender, _ = shared
    body = client.post("/recommend", json={"history": [], "k": 3}).json()
    assert body["popular"] is True and body["items"] == recommender.recommend([], k=3).items
    assert "most popular" in body["note"]
    assert client.post("/recommend", json={}).json() == client.post("/recommend", json={"history": []}).json()


def test_a_batch_answers_each_history_in_order(shared):
    client, recommender, _ = shared
    known = catalogue(recommender)
    histories = [[known[0], known[2]], [], [{"text": "something new"}, known[5]]]
    answer = client.post("/recommend/batch", json={"histories": histories, "k": 4})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["items"] for r in results] == [recommender.recommend(h, k=4).items for h in histories]
    assert [r["popular"] for r in results] == [False, True, False]


def test_similar_items_item_health_and_metadata(shared):
    client, recommender, _ = shared
    known = catalogue(recommender)
    similar = client.get(f"/similar/{known[0]}", params={"k": 4}).json()
    assert (
        similar["items"] == recommender.similar_items(known[0], k=4).items
        and known[0] not in similar["items"]
    )
    assert client.get(f"/items/{known[0]}").json() == recommender.item(known[0])
    assert client.get("/health").json() == {"status": "ok", "catalogue": recommender.catalogue_size}
    meta = client.get("/metadata").json()
    assert (
        meta["model"]["user_encoder"] == "sasrec"
        and meta["counts"]["catalogue"] == recommender.catalogue_size
    )
    assert meta["versions"]["transrec"] and meta["dataset"]["name"]
    assert meta["limits"]["max_k"] == 1000 and meta["limits"]["max_text_chars"] == 200


def test_the_api_docs_describe_every_endpoint(shared):
    client, _, _ = shared
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "transrec" and spec["info"]["version"]
    operations = {(m.upper(), p): op for p, ops in spec["paths"].items() for m, op in ops.items()}
    assert set(operations) == {
        ("POST", "/recommend"), ("POST", "/recommend/batch"), ("GET", "/similar/{item_id}"),
        ("POST", "/items"), ("GET", "/items/{item_id}"), ("DELETE", "/items/{item_id}"),
        ("GET", "/health"), ("GET", "/metadata"),
    }  # fmt: skip
    for key, op in operations.items():
        assert op.get("summary") and len(op.get("description", "")) > 30, key
    bodies = operations[("POST", "/items")]["requestBody"]["content"]
    assert set(bodies) == {"application/json", "multipart/form-data"}
    k = spec["components"]["schemas"]["RecommendRequest"]["properties"]["k"]
    assert (k["minimum"], k["maximum"]) == (1, 1000)
    assert client.get("/docs").status_code == 200


def test_a_bug_is_a_500_that_leaks_nothing(exports, monkeypatch, caplog):
    recommender = load(exports["text"].directory)

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail at /srv/models")

    monkeypatch.setattr(recommender, "recommend_many", broken)  # /recommend answers through the batcher
    with TestClient(create_app(recommender, HTTP_LIMITS), raise_server_exceptions=False) as client:
        answer = client.post("/recommend", json={"history": []})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal", "message": "internal error; the server log has the details"}
    assert "secret" not in answer.text and "Traceback" not in answer.text
    assert any("secret detail" in r.exc_text for r in caplog.records if r.exc_text)  # the log has it


def test_unknown_routes_and_methods_answer_json(shared):
    client, _, _ = shared
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.put("/recommend", json={})
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


# -- adding and removing items ---------------------------------------------------------------------------


def test_a_new_item_with_the_top_items_content_ranks_right_next_to_it(fresh):
    # Issue 11's "Done when": identical content -> identical vector -> identical score, so the new item
    # comes right next to the item it copies (their order is a tie, up to float rounding of the encoder).
    client, recommender, _ = fresh("text")
    history = catalogue(recommender)[:3]
    top = client.post("/recommend", json={"history": history, "k": 5}).json()
    copied = client.get(f"/items/{top['items'][0]}").json()
    added = client.post("/items", json={"id": "twin", "text": copied["text"]})
    assert added.status_code == 201
    assert added.json() == {"id": "twin", "text": copied["text"], "modality": "text", "added": True}
    after = client.post("/recommend", json={"history": history, "k": 5}).json()
    assert set(after["items"][:2]) == {top["items"][0], "twin"}
    assert after["scores"][1] == pytest.approx(after["scores"][0], abs=1e-5)
    assert after["items"][2:] == top["items"][1:4]  # everything else moved down by one


def test_replace_true_replaces_and_delete_removes(fresh):
    client, recommender, directory = fresh("text")
    known = catalogue(recommender)
    size = recommender.catalogue_size
    assert client.post("/items", json={"id": known[0], "text": "a new text"}).status_code == 409
    replaced = client.post("/items", params={"replace": "true"}, json={"id": known[0], "text": "a new text"})
    assert replaced.status_code == 201 and replaced.json()["text"] == "a new text"
    assert client.get("/health").json()["catalogue"] == size
    removed = client.delete(f"/items/{known[1]}")
    assert removed.status_code == 200 and removed.json() == {"removed": known[1], "catalogue": size - 1}
    assert client.get(f"/items/{known[1]}").status_code == 404
    everything = client.post("/recommend", json={"history": [known[2]], "k": 1000}).json()["items"]
    assert known[1] not in everything and len(everything) == size - 2  # all but the removed and the seen
    # persisted: a recommender loaded afresh from the directory has the change
    again = load(directory)
    assert again.item(known[0])["text"] == "a new text" and again.catalogue_size == size - 1


def test_an_item_added_from_a_form_with_an_uploaded_image(fresh):
    client, recommender, _ = fresh("mom")
    size = recommender.catalogue_size
    image = client.post("/items", data={"id": "poster"}, files={"image": ("p.png", png(), "image/png")})
    assert image.status_code == 201, image.text
    assert image.json()["modality"] == "image" and image.json()["added"] is True
    text = client.post("/items", files={"id": (None, "title"), "text": (None, "a plain title")})
    assert text.status_code == 201 and text.json()["modality"] == "text"
    as_json = client.post("/items", json={"id": "poster-2", "image": b64(png(colour=(1, 2, 3)))})
    assert as_json.status_code == 201 and as_json.json()["modality"] == "image"
    assert client.get("/health").json()["catalogue"] == size + 3
    # an image in a history reads as the same image added to the catalogue: the same user, the same answer
    history = [{"image": b64(png())}]
    record = client.post("/recommend", json={"history": history, "k": 4, "exclude_seen": False}).json()
    poster = client.post("/recommend", json={"history": ["poster"], "k": 4, "exclude_seen": False}).json()
    assert record["items"] == poster["items"] and record["scores"] == pytest.approx(
        poster["scores"], abs=1e-5
    )
