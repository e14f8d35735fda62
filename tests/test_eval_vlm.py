"""The VLM client, the judge and the VLM-served metrics against a small OpenAI-compatible server on 127.0.0.1:
request format (images as data URLs), JSON parsing incl. malformed replies, 429/5xx retries, timeouts, the cache."""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from fc_jax.eval.bench import Sample
from fc_jax.eval.judge import JudgeAnswerError, judge_messages, parse_judgement
from fc_jax.eval.metrics.vlm_metrics import GMEScore, Judge, Smoothness, qalign_score
from fc_jax.video import Video
from fc_jax.vlm import VLMClient, VLMConfig, VLMError


class FakeServer:
    """Answers POSTs from a script: `plan[path]` is a list of (status, body, delay, headers) used in order (the
    last one repeats); `handler(path, payload)` may compute a body instead. Records every request."""

    def __init__(self):
        self.requests: list[tuple[str, dict, dict]] = []
        self.plan: dict[str, list] = {}
        self.handler = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = self.path.removeprefix("/v1")
                server.requests.append((path, payload, dict(self.headers)))
                steps = server.plan.get(path)
                if steps:
                    status, body, delay, headers = steps.pop(0) if len(steps) > 1 else steps[0]
                else:
                    status, body, delay, headers = 200, server.handler(path, payload), 0, {}
                time.sleep(delay)
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_reply(text):
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def server():
    s = FakeServer()
    s.handler = lambda path, payload: chat_reply('{"HGC": 5, "LGC": 4, "NTP": 3}')
    yield s
    s.close()


def _client(server, tmp_path=None, **kw):
    cfg = dict(base_url=server.url, api_key="secret", timeout=2.0, max_retries=3, backoff=0.01, max_backoff=0.05,
               concurrency=3, cache_dir=str(tmp_path / "cache") if tmp_path else None)
    cfg.update(kw)
    return VLMClient(VLMConfig(**cfg))


def _img(color, h=24, w=16):
    return np.full((h, w, 3), color, np.uint8)


def _sample(tmp_path):
    Image.fromarray(_img(30)).save(tmp_path / "ref.png")
    Image.fromarray(_img(200)).save(tmp_path / "cloth.png")
    return Sample("0000", str(tmp_path / "ref.png"), str(tmp_path / "cloth.png"), "a red dress")


def _video(n=12):
    return Video("v.mp4", np.stack([_img(10 * i, 32, 32) for i in range(n)]), 24.0)


def test_judge_request_format(server, tmp_path):
    judge = Judge(_client(server), "judge-7b", frames=4)
    result = judge(_sample(tmp_path), _video())
    assert result.values == {"hgc": 5.0, "lgc": 4.0, "ntp": 3.0}
    path, payload, headers = server.requests[-1]
    assert path == "/chat/completions" and headers["Authorization"] == "Bearer secret"
    assert payload["model"] == "judge-7b" and payload["temperature"] == 0
    assert payload["response_format"] == {"type": "json_object"}
    content = payload["messages"][0]["content"]
    urls = [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
    assert len(urls) == 2 + 4  # reference, garment, 4 frames
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)
    ref = np.asarray(Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1]))))
    assert ref.shape == (24, 16, 3) and abs(int(ref.mean()) - 30) <= 2  # the reference image, in order
    assert "LGC must be 2 or lower" in content[0]["text"]


@pytest.mark.parametrize("reply,expected", [
    ('{"HGC": 4, "LGC": 2, "NTP": 5}', {"HGC": 4, "LGC": 2, "NTP": 5}),
    ('```json\n{"hgc": 3, "lgc": 3, "ntp": 4}\n```', {"HGC": 3, "LGC": 3, "NTP": 4}),
    ('Here is my judgement: {"HGC": 5, "LGC": 1, "NTP": 2.0}. Thanks', {"HGC": 5, "LGC": 1, "NTP": 2}),
])
def test_parse_valid(reply, expected):
    assert parse_judgement(reply) == expected


@pytest.mark.parametrize("reply,kind", [
    ("The garment looks great, 5/5.", "unparsable"),
    ('{"HGC": 4, "LGC": 3}', "unparsable"),
    ('{"HGC": "four", "LGC": 3, "NTP": 3}', "unparsable"),
    ('{"HGC": 4.5, "LGC": 3, "NTP": 3}', "unparsable"),
    ('{"HGC": 4, "LGC": 3, "NTP": true}', "unparsable"),
    ('{"HGC": 6, "LGC": 3, "NTP": 3}', "out_of_range"),
    ('{"HGC": 4, "LGC": 0, "NTP": 3}', "out_of_range"),
    ('{"HGC": 4, "LGC": 3, "NTP": 3', "unparsable"),
])
def test_parse_rejects_and_counts(reply, kind):
    with pytest.raises(JudgeAnswerError) as e:
        parse_judgement(reply)
    assert e.value.kind == kind


def test_malformed_reply_through_the_judge(server, tmp_path):
    server.handler = lambda path, payload: chat_reply("I think HGC is high.")
    with pytest.raises(JudgeAnswerError, match="unparsable"):
        Judge(_client(server), "m", frames=2)(_sample(tmp_path), _video())


def test_retries_429_and_5xx_then_succeeds(server):
    ok = chat_reply("fine")
    server.plan["/chat/completions"] = [(429, {"error": "slow down"}, 0, {"Retry-After": "0"}),
                                        (503, {"error": "busy"}, 0, {}), (500, b"oops", 0, {}), (200, ok, 0, {})]
    client = _client(server)
    assert client.chat("m", [{"role": "user", "content": "hi"}]) == ok
    assert client.stats["retries"] == 3 and len(server.requests) == 4


def test_gives_up_after_max_retries(server):
    server.plan["/chat/completions"] = [(502, {"error": "bad gateway"}, 0, {})]
    client = _client(server, max_retries=2)
    with pytest.raises(VLMError, match=r"failed after 3 attempts; last: HTTP 502"):
        client.chat("m", [{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(server):
    server.plan["/chat/completions"] = [(401, {"error": "bad key"}, 0, {})]
    with pytest.raises(VLMError, match="HTTP 401"):
        _client(server).chat("m", [{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1


def test_timeouts_are_retried_then_reported(server):
    server.plan["/chat/completions"] = [(200, chat_reply("late"), 0.6, {})]
    client = _client(server, timeout=0.15, max_retries=1)
    with pytest.raises(VLMError, match="(?i)timed? ?out"):
        client.chat("m", [{"role": "user", "content": "hi"}])
    assert len(server.requests) == 2


def test_json_mode_fallback_when_rejected(server):
    client = _client(server)
    server.plan["/chat/completions"] = [(400, {"error": "response_format not supported"}, 0, {}),
                                        (200, chat_reply("{}"), 0, {})]
    client.chat("m", [{"role": "user", "content": "x"}], json_mode=True)
    assert "response_format" in server.requests[0][1] and "response_format" not in server.requests[1][1]
    client.chat("m", [{"role": "user", "content": "y"}], json_mode=True)  # remembered: asked without it
    assert "response_format" not in server.requests[2][1]


def test_cache_second_run_sends_nothing(server, tmp_path):
    sample, video = _sample(tmp_path), _video()
    first = Judge(_client(server, tmp_path), "m", frames=3)(sample, video)
    sent = len(server.requests)
    client = _client(server, tmp_path)
    again = Judge(client, "m", frames=3)(sample, video)
    assert again.values == first.values and len(server.requests) == sent
    assert client.stats == {"requests": 0, "cache_hits": 1, "retries": 0}
    Judge(client, "m", frames=3)(sample, Video("v", video.frames[::-1].copy(), 24.0))  # other frames: a new request
    assert len(server.requests) == sent + 1
    Judge(client, "other-model", frames=3)(sample, video)  # other model: a new request
    assert len(server.requests) == sent + 2


def _qalign_reply(good_weight):
    top = [{"token": " good", "logprob": float(np.log(good_weight))},
           {"token": " excellent", "logprob": float(np.log(1 - good_weight))},
           {"token": " the", "logprob": -9.0}]
    return {"choices": [{"message": {"content": " good"}, "logprobs": {"content": [{"token": " good",
                                                                                     "top_logprobs": top}]}}]}


def test_qalign_score_and_smoothness(server):
    assert qalign_score(_qalign_reply(0.5)) == pytest.approx(0.875)
    with pytest.raises(VLMError, match="none of the level words"):
        qalign_score({"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "x", "logprob": 0}]}]}}]})

    def handler(path, payload):
        # Window centred on frame 5 of a 10-frame video ([4, 5, 6]) is judged worse: a jump in and a jump out.
        brightness = [np.asarray(Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",")[1])))).mean()
                      for p in payload["messages"][0]["content"] if p["type"] == "image_url"]
        return _qalign_reply(0.9 if abs(brightness[1] - 50) < 3 else 0.5)

    server.handler = handler
    video = Video("v", np.stack([_img(10 * i, 16, 16) for i in range(10)]), 24.0)
    result = Smoothness(_client(server), "q-align")(None, video)
    assert len(result.per_frame["qalign"]) == 10
    assert result.info["artifacts"] == 2 and result.values["smoo"] == pytest.approx(0.8)
    last = server.requests[-1][1]
    assert last["logprobs"] is True and last["max_tokens"] == 1 and last["messages"][-1]["role"] == "assistant"
    assert last["continue_final_message"] is True


def test_gme_embeddings(server, tmp_path):
    def handler(path, payload):
        assert path == "/embeddings"
        vec = [1.0, 0.0, 0.0] if "input" in payload else [1.0, 1.0, 0.0]
        return {"data": [{"embedding": vec}]}

    server.handler = handler
    result = GMEScore(_client(server), "gme-7b", frames=4)(_sample(tmp_path), _video())
    assert result.values["gme"] == pytest.approx(1 / np.sqrt(2))
    texts = [p for _, p, _ in server.requests if "input" in p]
    assert len(texts) == 1 and texts[0]["input"].endswith("a red dress")
    images = [p for _, p, _ in server.requests if "messages" in p]
    assert len(images) == 4 and images[0]["messages"][0]["content"][0]["type"] == "image_url"


def test_judge_messages_order():
    msgs = judge_messages(_img(1), _img(2), [_img(3)] * 2)
    kinds = [p["type"] for p in msgs[0]["content"]]
    assert kinds == ["text", "text", "image_url", "text", "image_url", "text", "image_url", "image_url"]
