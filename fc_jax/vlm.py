"""One client for any OpenAI-compatible server (vLLM, SGLang, Ollama, a hosted API): chat completions (images as
base64 data URLs, token log-probabilities on request, JSON output enforced where the server supports it) and
embeddings. Shared by the evaluation (the judge and the VLM-served metrics, `fc_jax.eval`) and the curation
(`fc_jax.data.curate`), so it lives below both.

- Retries (`post_with_retries`, shared with the curation's image-edit backend): HTTP 429 and 5xx, timeouts and
  refused connections are retried with exponential backoff (a numeric `Retry-After` is honoured, capped at
  `max_backoff`); other HTTP errors fail at once. After `max_retries` retries a `VLMError` names the URL, the
  status and the server's words.
- Concurrency: at most `concurrency` requests in flight (`map` runs a function over items in a thread pool).
- Cache: every successful response is stored under `cache_dir`, keyed by the SHA-256 of the endpoint and the
  canonical request (model, prompt, sampling options and the image bytes, which the data URLs carry), so a rerun
  sends nothing.
- `json_mode=True` sends `response_format={"type": "json_object"}`; a server that rejects it with HTTP 400 is
  asked again without it (remembered for the rest of the run), and the caller's strict parser decides.

Settings come from `VLMConfig` (fields, or the environment via `VLMConfig.from_env`).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image


class VLMError(RuntimeError):
    """A request to the VLM server failed for good."""


@dataclasses.dataclass
class VLMConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    api_key: str | None = None
    timeout: float = 120.0  # seconds per request
    max_retries: int = 4
    backoff: float = 1.0  # first wait; doubles each retry
    max_backoff: float = 30.0
    concurrency: int = 4
    cache_dir: str | None = None

    @classmethod
    def from_env(cls, **overrides) -> "VLMConfig | None":
        """`FC_EVAL_VLM_URL` (or `OPENAI_BASE_URL`) and `FC_EVAL_VLM_KEY` (or `OPENAI_API_KEY`); None without a URL."""
        url = overrides.pop("base_url", None) or os.environ.get("FC_EVAL_VLM_URL") or os.environ.get("OPENAI_BASE_URL")
        if not url:
            return None
        key = overrides.pop("api_key", None) or os.environ.get("FC_EVAL_VLM_KEY") or os.environ.get("OPENAI_API_KEY")
        return cls(base_url=url, api_key=key, **{k: v for k, v in overrides.items() if v is not None})


def image_data_url(image: np.ndarray, quality: int = 95) -> str:
    """uint8 RGB [H, W, 3] -> a `data:image/jpeg;base64,...` URL."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_part(image: np.ndarray) -> dict:
    return {"type": "image_url", "image_url": {"url": image_data_url(image)}}


class RequestFailed(RuntimeError):
    """A JSON POST failed for good. `status`: the last HTTP status (None without one); `transient`: True when
    the retries were spent on 429 / 5xx / timeouts / refused connections, False for an error not worth
    retrying (another HTTP status, an answer that is not JSON)."""

    def __init__(self, message: str, status: int | None, transient: bool):
        super().__init__(message)
        self.status, self.transient = status, transient


def post_with_retries(url: str, body: bytes, headers: dict, *, timeout: float, max_retries: int, backoff: float,
                      max_backoff: float = math.inf, slot: contextlib.AbstractContextManager = contextlib.nullcontext(),
                      count: Callable[[str], None] = lambda key: None) -> dict:
    """POST `body` and return the answer's JSON, retrying HTTP 429 / 5xx, timeouts and refused connections up to
    `max_retries` times after waits of `backoff * 2**attempt` (or a numeric `Retry-After`), capped at
    `max_backoff`. Each attempt runs inside `slot` (e.g. a semaphore bounding requests in flight) and calls
    `count("requests")`; each retry calls `count("retries")`. Failures raise `RequestFailed`."""
    last, status = "", None
    for attempt in range(max_retries + 1):
        wait = min(max_backoff, backoff * 2**attempt)
        try:
            with slot:
                count("requests")
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=timeout) as r:
                    return json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            status, last = e.code, f"HTTP {e.code}: {e.read().decode(errors='replace')[:300]}"
            if e.code != 429 and e.code < 500:
                raise RequestFailed(f"{url}: {last}", e.code, False) from e
            retry_after = e.headers.get("Retry-After") if e.headers else None
            if retry_after and retry_after.replace(".", "", 1).isdigit():
                wait = min(max_backoff, float(retry_after))
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
            status, last = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        except json.JSONDecodeError as e:
            raise RequestFailed(f"{url}: the server's answer is not JSON ({e})", None, False) from e
        if attempt < max_retries:
            count("retries")
            time.sleep(wait)
    raise RequestFailed(f"{url}: failed after {max_retries + 1} attempts; last: {last}", status, True)


class VLMClient:
    def __init__(self, config: VLMConfig):
        self.config = config
        self._slots = threading.Semaphore(config.concurrency)
        self._lock = threading.Lock()
        self._json_mode_ok = True
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}

    # -- public API -------------------------------------------------------------------------------------------

    def chat(self, model: str, messages: list[dict], *, json_mode: bool = False, max_tokens: int = 256,
             temperature: float = 0.0, top_logprobs: int | None = None, extra: dict | None = None) -> dict:
        """POST /chat/completions; returns the response JSON. `top_logprobs` asks for token log-probabilities."""
        payload: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature,
                                   "max_tokens": max_tokens}
        if top_logprobs is not None:
            payload.update(logprobs=True, top_logprobs=top_logprobs)
        payload.update(extra or {})
        if json_mode and self._json_mode_ok:
            try:
                return self._post("/chat/completions", dict(payload, response_format={"type": "json_object"}))
            except _BadRequest:
                self._json_mode_ok = False  # the server does not take response_format: ask without it
        return self._post("/chat/completions", payload)

    def embed(self, model: str, *, text: str | None = None, messages: list[dict] | None = None) -> np.ndarray:
        """POST /embeddings for a text (`input`) or a multimodal chat-style input (`messages`, as vLLM takes it);
        returns the embedding float32 [D]."""
        payload: dict[str, Any] = {"model": model, "encoding_format": "float"}
        if (text is None) == (messages is None):
            raise ValueError("embed takes exactly one of text= or messages=")
        payload.update({"input": text} if text is not None else {"messages": messages})
        response = self._post("/embeddings", payload)
        try:
            return np.asarray(response["data"][0]["embedding"], np.float32)
        except (KeyError, IndexError, TypeError) as e:
            raise VLMError(f"{self._url('/embeddings')}: no embedding in the response {str(response)[:200]}") from e

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list:
        """`[fn(x) for x in items]` with up to `concurrency` calls at once (order kept; the first error is raised)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(fn, items))

    # -- transport --------------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.config.base_url.rstrip("/") + path

    def _cache_path(self, path: str, payload: dict) -> str | None:
        if not self.config.cache_dir:
            return None
        key = hashlib.sha256(json.dumps([path, payload], sort_keys=True).encode()).hexdigest()
        return os.path.join(self.config.cache_dir, key[:2], key + ".json")

    def _post(self, path: str, payload: dict) -> dict:
        cache = self._cache_path(path, payload)
        if cache and os.path.isfile(cache):
            with open(cache) as f:
                with self._lock:
                    self.stats["cache_hits"] += 1
                return json.load(f)
        response = self._post_with_retries(path, payload)
        if cache:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            tmp = f"{cache}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "w") as f:
                json.dump(response, f)
            os.replace(tmp, cache)
        return response

    def _post_with_retries(self, path: str, payload: dict) -> dict:
        c = self.config
        headers = {"Content-Type": "application/json"}
        if c.api_key:
            headers["Authorization"] = f"Bearer {c.api_key}"
        try:
            return post_with_retries(self._url(path), json.dumps(payload).encode(), headers, timeout=c.timeout,
                                     max_retries=c.max_retries, backoff=c.backoff, max_backoff=c.max_backoff,
                                     slot=self._slots, count=self._count)
        except RequestFailed as e:
            if e.status == 400 and "response_format" in payload:
                raise _BadRequest(str(e)) from e
            raise VLMError(str(e)) from e

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1


class _BadRequest(VLMError):
    """HTTP 400 on a request carrying response_format (retried without it)."""
