"""embed and rerank through a real worker and the API, incl. the official `openai` client."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import child_env, free_port, start_worker, stop_process, wait_for, wait_for_worker
from modelq.testing import serving

TEXTS = ["The cat sits on the mat.", "A dog plays in the park.", "Quarterly revenue grew by ten percent."]


def tiny_cross_encoder(path: Path) -> Path:
    """A random-weight BERT cross-encoder with a tiny vocabulary, saved like a real one."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *sorted({w.strip(".").lower() for t in TEXTS for w in t.split()}),
        "cats",
        "mats",
        "revenue?",
        "what",
    ]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    root = tmp_path_factory.mktemp("embed")
    cross = tiny_cross_encoder(root / "models" / "cross-encoder")
    # Requests may load undeclared models from the model roots only. The API's roots include one
    # the worker's lack ("api-only"), so the worker's own check is seen too.
    (root / "models" / "escape").symlink_to("/etc")
    tiny_cross_encoder(root / "api-only" / "cross-encoder")
    env = {"MODELQ_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1", "MODELQ_MODEL_ROOTS": str(root / "models")}
    settings = load_settings(
        home=root / "home", imports=["modelq_test_tasks"], model_roots=[root / "models", root / "api-only"]
    )
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018
    worker = start_worker(env, "gpu", "embed@%h", "--pool", "threads", "-c", "4")
    try:
        wait_for_worker(app, "embed@")
        with serving(create_api(settings, celery_app=app)) as url:
            yield {"url": url, "cross": str(cross), "app": app, "root": root}
    finally:
        stop_process(worker)
        EmbeddedRedis(root / "home").stop()


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_openai_client_gets_the_same_vectors_as_sentence_transformers(served: dict) -> None:
    import openai
    from sentence_transformers import SentenceTransformer

    from modelq.workloads.embed import bundled_minilm_path

    client = openai.OpenAI(base_url=f"{served['url']}/v1", api_key="unused")
    response = client.embeddings.create(model="minilm", input=TEXTS)  # the client asks for base64
    expected = SentenceTransformer(bundled_minilm_path(), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert [d.index for d in response.data] == [0, 1, 2]
    for got, want in zip(response.data, expected, strict=True):
        assert len(got.embedding) == 384
        assert _cosine(got.embedding, want.tolist()) >= 0.999
    assert response.usage.prompt_tokens > 0
    floats = client.embeddings.create(model="minilm", input="one text", encoding_format="float")
    assert len(floats.data) == 1 and len(floats.data[0].embedding) == 384
    short = client.embeddings.create(model="minilm", input="one text", dimensions=64, encoding_format="float")
    assert len(short.data[0].embedding) == 64


def test_embeddings_bad_input_and_unknown_model(served: dict) -> None:
    with httpx.Client(base_url=served["url"], timeout=120) as http:
        assert http.post("/v1/embeddings", json={"input": []}).status_code == 422
        tokens = http.post("/v1/embeddings", json={"input": [[1, 2, 3]]})
        # errors come in OpenAI's shape on its routes: {"error": {"message", "type", "param", "code"}}
        assert tokens.status_code == 422 and "token arrays" in tokens.json()["error"]["message"]
        assert tokens.json()["error"]["param"] == "input" and tokens.json()["error"]["type"] == "invalid_request_error"
        missing = http.post("/v1/embeddings", json={"input": "hi", "model": "/no/such/model"})
        assert missing.status_code == 404 and "/no/such/model" in missing.json()["error"]["message"]
        # the worker survives: the next request is served
        assert http.post("/v1/embeddings", json={"input": "still here"}).status_code == 200


def _message(answer: httpx.Response) -> str:
    """The error message, in OpenAI's shape (its routes) or modelq's."""
    body = answer.json()
    return body["error"]["message"] if isinstance(body["error"], dict) else body["message"]


def test_a_request_loads_only_declared_models_and_directories_under_a_model_root(served: dict) -> None:
    root, app = served["root"], served["app"]
    probes = [
        "/root/.ssh",
        "/nonexistent/dir",
        "/proc/self/environ",
        "/etc",
        "~/.ssh",
        "../../etc",
        str(root / "models" / ".." / "home"),
        str(root / "models" / "escape"),
        "escape",
        str(root / "models" / "cross-encoder" / "config.json"),
        "BAAI/bge-small-en-v1.5",
        "no-such-model",
    ]
    jobs_before = sum(app.modelq.store.counts().values())
    shapes = set()
    with httpx.Client(base_url=served["url"], timeout=120) as http:
        for model in probes:
            answers = [
                http.post("/v1/embeddings", json={"input": "hi", "model": model}),
                http.post("/v1/rerank", json={"query": "q", "documents": ["d"], "model": model}),
                http.post("/v1/jobs", json={"task": "embed", "input": {"input": ["hi"], "model": model}}),
            ]
            for answer in answers:
                assert answer.status_code == 404, (model, answer.text)
                message = _message(answer)
                # one message, whatever the path is or whether it exists: nothing about the file system
                shapes.add(message.replace(repr(model), "MODEL"))
                assert "MODELQ_MODEL_ROOTS" in message and "MODELQ_ALLOW_HUB_MODELS" in message
        assert len(shapes) == 1, shapes
        assert sum(app.modelq.store.counts().values()) == jobs_before  # nothing recorded or queued
        # a directory under a root, by its path relative to the root
        by_name = http.post("/v1/rerank", json={"query": "cats", "documents": TEXTS, "model": "cross-encoder"})
        assert by_name.status_code == 200, by_name.text
        # the worker checks again on its own file system: "api-only" is not one of its roots
        elsewhere = str(root / "api-only" / "cross-encoder")
        refused = http.post("/v1/rerank", json={"query": "cats", "documents": TEXTS, "model": elsewhere})
        assert refused.status_code == 404, refused.text
        assert _message(refused).replace(repr(elsewhere), "MODEL") in shapes


def test_rerank_with_a_cross_encoder_from_a_path(served: dict) -> None:
    body = {
        "model": served["cross"],
        "query": "what cats sit on mats?",
        "documents": TEXTS,
        "top_n": 2,
        "return_documents": True,
    }
    response = httpx.post(f"{served['url']}/v1/rerank", json=body, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["model"] == served["cross"]
    results = data["results"]
    assert len(results) == 2
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert results[0]["document"]["text"] == TEXTS[results[0]["index"]]
    # scores are the cross-encoder's own, in the documents' order
    from sentence_transformers import CrossEncoder

    scores = CrossEncoder(served["cross"], device="cpu").predict([(body["query"], t) for t in TEXTS])
    best = sorted(range(3), key=lambda i: scores[i], reverse=True)[:2]
    assert [r["index"] for r in results] == best
    assert [r["relevance_score"] for r in results] == pytest.approx([float(scores[i]) for i in best], abs=1e-4)


def test_rerank_offline_default_uses_the_bundled_bi_encoder(served: dict) -> None:
    body = {"query": "Where is the cat?", "documents": [{"text": t} for t in TEXTS]}
    data = httpx.post(f"{served['url']}/v1/rerank", json=body, timeout=120).json()
    assert data["model"].startswith("minilm (bi-encoder cosine similarity")
    assert data["results"][0]["index"] == 0  # the sentence about the cat
    assert len(data["results"]) == 3
    bad = httpx.post(f"{served['url']}/v1/rerank", json={"query": "q", "documents": [{"title": "x"}]}, timeout=30)
    assert bad.status_code == 422 and "documents[0]" in bad.json()["message"]


def test_embed_jobs_keep_their_own_results_when_batched(served: dict) -> None:
    from modelq.client import Client

    client = Client(served["url"])
    jobs = [client.submit("embed", {"input": [f"sentence number {i}"]}) for i in range(12)]
    results = [client.result(job["id"], timeout=120) for job in jobs]
    assert all(r["dimensions"] == 384 and len(r["embeddings"]) == 1 for r in results)
    # the same text gives the same vector whatever batch it ran in
    again = client.run("embed", {"input": ["sentence number 3"]}, timeout=120)
    assert _cosine(again["embeddings"][0], results[3]["embeddings"][0]) > 0.9999
    assert json.dumps(results[0]) != json.dumps(results[1])


def test_openai_client_against_modelq_up(tmp_path: Path) -> None:
    import openai

    # given `modelq up` with nothing configured (its own home, a free port, no network)
    port = free_port()
    env = child_env(MODELQ_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelq", "up", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=60, interval=0.1, what="modelq up to answer /healthz")
        # when the official openai client asks it for embeddings of the bundled model
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", timeout=180, max_retries=0)
        texts = ["A cat sleeps on the sofa.", "A kitten is napping on the couch.", "The stock market fell today."]
        response = client.embeddings.create(model="minilm", input=texts)
        # then it gets one 384-dimension vector per text, and similar texts are closer than unrelated ones
        vectors = [item.embedding for item in response.data]
        assert [item.index for item in response.data] == [0, 1, 2] and response.model == "minilm"
        assert all(len(v) == 384 for v in vectors)
        similar, unrelated = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
        assert similar > unrelated + 0.2 and similar > _cosine(vectors[1], vectors[2]) + 0.2
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-4000:]
