"""The OpenAI-compatible backend against a scripted in-process HTTP server: retries
with backoff, timeouts, concurrency limit, the API key, missing-label policies, chat
and completion endpoints (no LM, no network)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bayes_align.scoring import (
    HTTPRequestError,
    Item,
    MissingLabelError,
    PromptTemplate,
    load_backend,
    score,
)
from bayes_align.scoring.backends import post_json


class FakeServer:
    """``/v1/completions`` and ``/v1/chat/completions`` answering from ``reply(path, payload)``
    (a dict, or ``(status, dict, headers)``); records every request."""

    def __init__(self, reply, delay: float = 0.0):
        self.reply = reply
        self.delay = delay
        self.requests: list[tuple[str, dict, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.path, payload, dict(self.headers)))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    answer = server.reply(self.path, payload)
                    status, body, headers = answer if isinstance(answer, tuple) else (200, answer, {})
                    data = json.dumps(body).encode()
                finally:
                    # done before the answer leaves: once the client has it, it may send its
                    # next request, which must not find this one still counted
                    with server.lock:
                        server.in_flight -= 1
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout tests)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(top: dict[str, float], prompt_tokens: int = 10) -> dict:
    first = max(top, key=top.get)
    return {
        "choices": [{"text": first, "logprobs": {"tokens": [first], "token_logprobs": [top[first]],
                                                  "top_logprobs": [top], "text_offset": [0]}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1},
    }


def _config(url: str, **fields) -> dict:
    return {"name": "fake", "backend": "openai", "base_url": url, "model": "fake-model",
            "max_retries": 2, "timeout": 5, **fields}


ITEMS = [Item("q1", "Agree?", ("yes", "perhaps", "no")), Item("q2", "Sure?", ("yes", "no"))]


def test_post_json_retries_429_and_5xx_with_exponential_backoff():
    script = iter([(429, {"error": "slow down"}, {}), (503, {"error": "busy"}, {}), (200, {"ok": 1}, {})])
    with FakeServer(lambda path, payload: next(script)) as server:
        delays: list[float] = []
        answer = post_json(server.url + "/completions", {"x": 1}, backoff=0.5, sleep=delays.append)
    assert answer == {"ok": 1} and len(server.requests) == 3
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0  # 0.5 * 2**attempt, jittered


def test_post_json_honours_retry_after_and_gives_up_after_max_retries():
    with FakeServer(lambda path, payload: (429, {"error": "quota"}, {"Retry-After": "3"})) as server:
        delays: list[float] = []
        with pytest.raises(HTTPRequestError, match="after 3 attempt.*HTTP 429"):
            post_json(server.url + "/completions", {}, max_retries=2, sleep=delays.append)
    assert delays == [3.0, 3.0] and len(server.requests) == 3


def test_post_json_does_not_retry_a_bad_request():
    with FakeServer(lambda path, payload: (400, {"error": "unknown model 'x'"}, {})) as server:
        with pytest.raises(HTTPRequestError, match="HTTP 400.*unknown model") as info:
            post_json(server.url + "/completions", {}, sleep=lambda s: None)
    assert info.value.status == 400 and len(server.requests) == 1


def test_post_json_retries_timeouts():
    with FakeServer(lambda path, payload: {"ok": 1}, delay=0.5) as server:
        with pytest.raises(HTTPRequestError, match="after 2 attempt.*timed out"):
            post_json(server.url + "/completions", {}, timeout=0.1, max_retries=1, sleep=lambda s: None)
    assert len(server.requests) == 2


def test_connection_refused_is_retried_then_named():
    with pytest.raises(HTTPRequestError, match="Check that the server is up"):
        post_json("http://127.0.0.1:9/v1/completions", {}, max_retries=1, sleep=lambda s: None)


def test_label_logprobs_concurrency_and_api_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-secret-123")
    top = {" A": -1.0, " B": -2.0, " C": -3.0, " the": -0.5}
    with FakeServer(lambda path, payload: _completion(top), delay=0.05) as server:
        backend = load_backend(_config(server.url, api_key_env="FAKE_KEY", max_concurrency=2))
        cache = tmp_path / "cache.jsonl"
        scores = score(backend, ITEMS, cache=cache, progress=False)
    assert len(scores) == 5 and len(server.requests) == 5
    assert server.max_in_flight == 2
    path, payload, headers = server.requests[0]
    assert path == "/v1/completions" and payload["max_tokens"] == 1 and payload["logprobs"] == 20
    assert payload["model"] == "fake-model" and payload["prompt"].endswith("\n\nAnswer:")
    assert headers["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in cache.read_text() and "FAKE_KEY" not in cache.read_text()
    first = scores.iloc[0]  # plain text (no local tokenizer): labels " A", " B", " C"
    np.testing.assert_allclose(first["position_logits"], [-1.0, -2.0, -3.0])
    assert first["label_mass"] == pytest.approx(np.exp([-1.0, -2.0, -3.0]).sum())
    assert first["n_prompt_tokens"] == 10 and first["parse_status"] == "ok"


def test_missing_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("ABSENT_KEY", raising=False)
    with pytest.raises(ValueError, match="'ABSENT_KEY' \\(api_key_env\\) is not set"):
        load_backend(_config("http://127.0.0.1:9/v1", api_key_env="ABSENT_KEY"))


def _echo_reply(top: dict[str, float], label_logprobs: dict[str, float]):
    def reply(path, payload):
        if not payload.get("echo"):
            return _completion(top)
        label = next(lab for lab in label_logprobs if payload["prompt"].endswith(lab))
        return {
            "choices": [{"text": payload["prompt"] + "x", "logprobs": {
                "tokens": ["Answer", ":", label, "x"], "token_logprobs": [None, -0.1, label_logprobs[label], -5.0],
                "top_logprobs": None, "text_offset": [0, 6, 7, 9]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
    return reply


@pytest.mark.parametrize("policy", ["renormalise", "error", "echo"])
def test_missing_label_policies(policy):
    top = {" A": -1.0, " B": -2.0, " x": -0.1}  # " C" is outside the top log-probs
    with FakeServer(_echo_reply(top, {" A": -1.0, " B": -2.0, " C": -4.0})) as server:
        backend = load_backend(_config(server.url, missing_labels=policy))
        if policy == "error":
            with pytest.raises(MissingLabelError, match=r"\[' C'\] are not among the top 20"):
                score(backend, ITEMS[:1], debias=None, progress=False)
            return
        if policy == "renormalise":
            with pytest.warns(UserWarning, match="1 of 1 prompts had 1 label"):
                scores = score(backend, ITEMS[:1], debias=None, progress=False)
            np.testing.assert_allclose(scores["probs"].iloc[0], [np.e / (np.e + 1), 1 / (np.e + 1), 0])
            assert scores["n_missing_labels"].iloc[0] == 1
        else:
            scores = score(backend, ITEMS[:1], debias=None, progress=False)
            np.testing.assert_allclose(scores["position_logits"].iloc[0], [-1.0, -2.0, -4.0])
            echoed = [p for _, p, _ in server.requests if p.get("echo")]
            assert len(echoed) == 1 and echoed[0]["prompt"].endswith("Answer: C")
            assert scores["n_missing_labels"].iloc[0] == 0 and scores["parse_status"].iloc[0] == "ok"


def test_chat_endpoint_logprobs_and_completions():
    def reply(path, payload):
        if payload.get("logprobs"):
            content = {"token": "A", "logprob": -0.5,
                       "top_logprobs": [{"token": "A", "logprob": -0.5}, {"token": "B", "logprob": -1.5},
                                        {"token": "C", "logprob": -2.5}]}
            return {"choices": [{"message": {"content": "A"}, "logprobs": {"content": [content]}}]}
        return {"choices": [{"message": {"content": '{"A": "50%", "B": "30%", "C": "20%"}'}}]}

    with FakeServer(reply) as server:
        backend = load_backend(_config(server.url, api="chat"))
        template = PromptTemplate(system_prompt="Answer as a survey respondent.")
        scores = score(backend, ITEMS[:1], template, debias=None, progress=False)
        stated = score(backend, ITEMS[:1], template, debias=None, method="verbalized",
                       temperature=0.0, progress=False)
    path, payload, _ = server.requests[0]
    assert path == "/v1/chat/completions" and payload["top_logprobs"] == 20 and payload["logprobs"] is True
    assert payload["messages"][0] == {"role": "system", "content": "Answer as a survey respondent."}
    np.testing.assert_allclose(scores["position_logits"].iloc[0], [-0.5, -1.5, -2.5])
    _, payload, _ = server.requests[-1]
    assert payload["temperature"] == 0.0 and "JSON object" in payload["messages"][-1]["content"]
    np.testing.assert_allclose(stated["probs"].iloc[0], [0.5, 0.3, 0.2])
    assert json.loads(stated["prompt"].iloc[0])[1]["role"] == "user"  # messages kept for audit
    with pytest.raises(ValueError, match="echo needs api: completions"):
        load_backend(_config(server.url, api="chat", missing_labels="echo"))


def test_a_failed_request_keeps_the_finished_rows_in_the_cache(tmp_path):
    seen = []

    def reply(path, payload):
        seen.append(1)
        if len(seen) == 4:
            return 400, {"error": "context length exceeded"}, {}
        return _completion({" A": -1.0, " B": -2.0, " C": -3.0})

    cache = tmp_path / "cache.jsonl"
    with FakeServer(reply) as server:
        backend = load_backend(_config(server.url, max_concurrency=1))
        with pytest.raises(HTTPRequestError, match="context length exceeded"):
            score(backend, ITEMS, cache=cache, batch_size=1, progress=False)
        assert len(cache.read_text().splitlines()) == 1 + len(seen) - 1  # every finished prompt
        scores = score(backend, ITEMS, cache=cache, progress=False)
    assert len(scores) == 5 and len(seen) == 6  # only the failed prompt was asked again
