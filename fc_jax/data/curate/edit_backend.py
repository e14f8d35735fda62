"""The image-edit backend behind try-off and try-on: `edit(prompt, images) -> image`, with two HTTP kinds.

- `openai`: OpenAI-compatible `POST {base_url}/images/edits`, multipart form (`model`, `prompt`, `n=1`,
  `response_format=b64_json`, optional `size`, the images as `image[]` PNG files); the answer's
  `data[0].b64_json` (or `data[0].url` as a data URL) is the result.
- `json`: a self-hosted editing model (e.g. Qwen-Image-Edit behind a small server): `POST {base_url}` with JSON
  `{"model", "prompt", "images": [PNG data URLs]}`; the answer is `{"image": base64 or data URL}`.

Requests go through `fc_jax.vlm.post_with_retries`: HTTP 429/5xx, timeouts and refused connections are
retried with exponential backoff (a numeric `Retry-After` honoured, capped at `max_backoff`); after `max_retries`
an `EditError` with `transient=True` says so (the manifest records an error, tried again next run). Other HTTP
errors (a refused prompt, a bad image) and answers that are not JSON or hold no image raise `EditError` with
`transient=False` (recorded as a rejection).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import uuid
from typing import Protocol

import numpy as np
from PIL import Image

from fc_jax.vlm import RequestFailed, post_with_retries

KINDS = ("openai", "json")


class EditError(RuntimeError):
    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class EditBackend(Protocol):
    def edit(self, prompt: str, images: list[np.ndarray]) -> np.ndarray:
        """uint8 RGB images [H, W, 3] (the first is the one edited) -> the edited uint8 RGB image."""


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: str, where: str) -> np.ndarray:
    """base64 (or a base64 data URL) -> uint8 RGB [H, W, 3]."""
    try:
        raw = base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data, validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # binascii / PIL errors
        raise EditError(f"{where}: the returned image does not decode ({type(e).__name__}: {e})", False) from e


class HTTPEditBackend:
    """Either kind of `KINDS`, from the config's `edit` block."""

    def __init__(self, cfg):
        if cfg.kind not in KINDS:
            raise ValueError(f"edit.kind must be one of {KINDS}, got {cfg.kind!r}")
        if not cfg.base_url:
            raise ValueError("edit.base_url is not set: the try-off and try-on stages need an image-edit server")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + ("/images/edits" if cfg.kind == "openai" else "")
        self.stats = {"requests": 0, "retries": 0}
        self._lock = threading.Lock()

    def edit(self, prompt: str, images: list[np.ndarray]) -> np.ndarray:
        body, content_type = (self._multipart if self.cfg.kind == "openai" else self._json)(prompt, images)
        answer = self._send(body, content_type)
        try:
            data = answer["data"][0] if self.cfg.kind == "openai" else answer
            image = data.get("b64_json") or data.get("image") or data.get("url") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            image = ""
        if not isinstance(image, str) or not image:
            raise EditError(f"{self.url}: the answer holds no image: {json.dumps(answer)[:200]}", False)
        return decode_image(image, self.url)

    def _json(self, prompt, images):
        urls = ["data:image/png;base64," + base64.b64encode(png_bytes(im)).decode() for im in images]
        return json.dumps({"model": self.cfg.model, "prompt": prompt, "images": urls}).encode(), "application/json"

    def _multipart(self, prompt, images):
        boundary = uuid.uuid4().hex
        fields = {"model": self.cfg.model, "prompt": prompt, "n": "1", "response_format": "b64_json"}
        if self.cfg.size:
            fields["size"] = self.cfg.size
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        for i, im in enumerate(images):
            head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image[]"; filename="image{i}.png"\r\n'
                    "Content-Type: image/png\r\n\r\n")
            parts.append(head.encode() + png_bytes(im) + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return b"".join(parts), f"multipart/form-data; boundary={boundary}"

    def _send(self, body: bytes, content_type: str) -> dict:
        c = self.cfg
        headers = {"Content-Type": content_type}
        if c.api_key:
            headers["Authorization"] = f"Bearer {c.api_key}"
        try:
            return post_with_retries(self.url, body, headers, timeout=c.timeout, max_retries=c.max_retries,
                                     backoff=c.backoff, max_backoff=c.max_backoff, count=self._count)
        except RequestFailed as e:
            raise EditError(str(e), e.transient) from e

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1
