"""A client of the studio, for the benchmark (`python -m fc_jax.bench serve`) and the tests: `launch(args)`
starts `python -m fc_jax.serve --port=0 ...` and returns (process, URL); `StudioClient` speaks the stream
WebSocket (aiohttp), keeping every frame with its arrival time and every JSON message."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np

READY = "fc_jax studio: serving on"  # (the same line as fc_jax.serve.__main__.READY)


def launch(args=(), timeout: float = 240.0, env=None):
    """Start the studio on 127.0.0.1 at a free port; (Popen, URL). RuntimeError with its stderr if it does not
    come up within `timeout` seconds."""
    proc = subprocess.Popen([sys.executable, "-m", "fc_jax.serve", "--host=127.0.0.1", "--port=0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    found: list[str] = []

    def read():
        for line in proc.stdout:
            if line.startswith(READY):
                found.append(line.split()[-1])
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"the studio did not start within {timeout}s:\n{''.join(err[-30:])}")
    return proc, found[0]


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclasses.dataclass
class Frame:
    number: int
    chunk: int
    jpeg: bytes
    at: float  # time.perf_counter() on arrival

    def pixels(self) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(self.jpeg)) as img:
            return np.asarray(img.convert("RGB"))


class StudioClient:
    """`async with StudioClient(url) as c:` then `await c.start(...)`, `await c.frames_until(n)`, ..."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.frames: list[Frame] = []
        self.messages: list[dict] = []
        self._changed = asyncio.Event()

    async def __aenter__(self):
        import aiohttp

        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(self.url.replace("http", "ws", 1) + "/ws")
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc):
        self._reader.cancel()
        await self.ws.close()
        await self.http.close()

    async def _read(self):
        import aiohttp

        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                number, chunk = struct.unpack(">II", msg.data[:8])
                self.frames.append(Frame(number, chunk, msg.data[8:], time.perf_counter()))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append({**json.loads(msg.data), "_at": time.perf_counter()})
            self._changed.set()

    async def send(self, message) -> float:
        """Send a message (a dict as JSON, a str as it is); the time it was sent."""
        at = time.perf_counter()
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))
        return at

    async def start(self, person="p0", garment="g0", prompt="") -> float:
        return await self.send({"type": "start", "person": person, "garment": garment, "prompt": prompt})

    async def switch(self, garment, seq=1, **options) -> float:
        return await self.send({"type": "switch", "garment": garment, "seq": seq, "options": options or None})

    async def wait_for(self, predicate, timeout: float = 60.0, what: str = "a condition"):
        """Wait until predicate() is truthy (checked on every arrival); its value. TimeoutError naming `what`."""
        deadline = time.perf_counter() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; messages: {self.messages[-5:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    async def frames_until(self, count: int, timeout: float = 60.0) -> list[Frame]:
        await self.wait_for(lambda: len(self.frames) >= count, timeout, f"{count} frames")
        return self.frames

    def message(self, type: str, **match) -> dict | None:
        """The latest message of that type whose fields match."""
        for m in reversed(self.messages):
            if m.get("type") == type and all(m.get(k) == v for k, v in match.items()):
                return m
        return None

    async def expect(self, type: str, timeout: float = 30.0, **match) -> dict:
        return await self.wait_for(lambda: self.message(type, **match), timeout, f"a {type} message {match}")
