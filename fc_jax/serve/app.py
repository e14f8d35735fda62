"""The studio's web server (aiohttp): the page, the gallery, uploads, recordings and the stream WebSocket.

Routes: `GET /` the page (`static/`), `GET /api/info` the gallery and settings, `GET /gallery/ID.png`,
`POST /api/upload?kind=person|garment` (the raw image as the body, at most 8 MiB) -> {"id", "url"},
`GET /uploads/ID.png`, `GET /recordings/TOKEN.mp4` (the stream so far), `GET /ws` the stream.

The WebSocket (one per tab, one stream at a time on it). Client -> server, JSON text:
  {"type": "start", "person": ID, "garment": ID, "prompt": TEXT (optional; empty: the person's caption with the
   garment)}; {"type": "stop"};
  {"type": "switch", "garment": ID, "seq": ANY, "options": {"refresh", "withdraw", "disentangle": BOOL, and with
   a server started with --edit, "edit": BOOL: the plug-in edit in place of the built-in switch}};
  {"type": "options", "refresh"/"withdraw"/"disentangle"/"edit": BOOL} (the options of the next switches).
Server -> client: JSON text {"type": "status" | "error" | "busy" | "warning" | "chunk", ...} and binary frames:
an 8-byte header (uint32 big-endian frame number, uint32 chunk index) then one JPEG. Each chunk's frames follow
its "chunk" message ({"index", "first_frame", "frames", "garment", "generate_ms", "switch"}) and are sent at
the video's fps. A stream beyond the pool's size is refused with "busy" (no queue: the tab may try again).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import secrets
import struct

from aiohttp import WSMsgType, web

from fc_jax.serve.gallery import Gallery
from fc_jax.serve.model import SWITCH_TOGGLES, Model, Prompts, SessionPool
from fc_jax.serve.stream import END, Stream
from fc_jax.serve.uploads import UploadError, Uploads

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RECORD_FRAMES = 24 * 600  # frames kept per recording (10 minutes at 24 fps), as the JPEGs sent
RECORDINGS = 16  # recordings kept (the oldest dropped)


class Recording:
    def __init__(self, fps: int):
        self.token = secrets.token_urlsafe(12)
        self.fps = fps
        self.jpegs: collections.deque[bytes] = collections.deque(maxlen=RECORD_FRAMES)

    @property
    def url(self) -> str:
        return f"/recordings/{self.token}.mp4"


class Studio:
    def __init__(self, model: Model, pool: SessionPool, gallery: Gallery, folder: str):
        self.model, self.pool, self.gallery = model, pool, gallery
        self.prompts = Prompts(model)
        self.uploads = Uploads(folder)
        self.folder = folder
        self.fps = int(model.config.video.fps)
        self.recordings: collections.OrderedDict[str, Recording] = collections.OrderedDict()

    # -- helpers ----------------------------------------------------------------------------------------------
    def image(self, id, kind: str):
        """(image for the session, garment item or None) of a built-in or uploaded id; ValueError if unknown."""
        if not isinstance(id, str):
            raise ValueError(f"{kind}: expected an image id (a string); got {id!r}")
        builtin = self.gallery.person(id) if kind == "person" else self.gallery.garment(id)
        if builtin is not None:
            return builtin.image, builtin
        path = self.uploads.path(id)
        if path is None:
            raise ValueError(f"unknown {kind} {id!r}: pick one from the gallery or upload one")
        return path, None

    def record(self) -> Recording:
        rec = Recording(self.fps)
        self.recordings[rec.token] = rec
        while len(self.recordings) > RECORDINGS:
            self.recordings.popitem(last=False)
        return rec

    # -- HTTP -------------------------------------------------------------------------------------------------
    async def index(self, request):
        return web.FileResponse(os.path.join(STATIC, "index.html"))

    async def info(self, request):
        v = self.model.config.video
        return web.json_response({**self.gallery.listing(), "fps": self.fps, "height": v.height, "width": v.width,
                                  "chunk_frames": 4 * self.model.config.student.chunk_frames,
                                  "max_streams": self.pool.size, "running": self.pool.running,
                                  "max_upload_bytes": self.uploads.max_bytes, "model": self.model.description,
                                  "tinyworld": self.model.vocabulary is not None,
                                  "edit": self.model.edit_name or None})

    async def gallery_png(self, request):
        data = self.gallery.png(request.match_info["id"])
        if data is None:
            raise web.HTTPNotFound(text="no such gallery image")
        return web.Response(body=data, content_type="image/png")

    async def upload(self, request):
        kind = request.query.get("kind", "garment")
        if kind not in ("person", "garment"):
            return web.json_response({"error": f"kind must be person or garment; got {kind!r}"}, status=400)
        limit = self.uploads.max_bytes
        if request.content_length is not None and request.content_length > limit:
            return web.json_response({"error": f"upload too large: {request.content_length / 2**20:.1f} MiB; the "
                                               f"limit is {limit / 2**20:.0f} MiB"}, status=413)
        data = bytearray()
        async for block in request.content.iter_chunked(1 << 16):
            data += block
            if len(data) > limit:
                return web.json_response({"error": f"upload too large: over {limit / 2**20:.0f} MiB (the limit)"},
                                         status=413)
        try:
            id = await asyncio.get_running_loop().run_in_executor(None, self.uploads.add, bytes(data), kind)
        except UploadError as e:
            return web.json_response({"error": str(e)}, status=e.status)
        return web.json_response({"id": id, "kind": kind, "url": f"/uploads/{id}.png"})

    async def upload_png(self, request):
        path = self.uploads.path(request.match_info["id"])
        if path is None:
            raise web.HTTPNotFound(text="no such upload")
        return web.FileResponse(path)

    async def recording(self, request):
        rec = self.recordings.get(request.match_info["token"])
        if rec is None:
            raise web.HTTPNotFound(text="no such recording (recordings are kept while the server runs, the last "
                                        f"{RECORDINGS})")
        jpegs = list(rec.jpegs)
        if not jpegs:
            raise web.HTTPNotFound(text="the stream has no frames yet")
        data = await asyncio.get_running_loop().run_in_executor(None, self._mp4, jpegs, rec.fps)
        return web.Response(body=data, content_type="video/mp4",
                            headers={"Content-Disposition": f'attachment; filename="studio-{rec.token[:6]}.mp4"'})

    def _mp4(self, jpegs: list[bytes], fps: int) -> bytes:
        import io

        import numpy as np
        from PIL import Image

        from fc_jax.video import Mp4Writer

        path = os.path.join(self.folder, f"rec-{secrets.token_hex(6)}.mp4")
        try:
            with Mp4Writer(path, fps=fps) as writer:
                for data in jpegs:
                    with Image.open(io.BytesIO(data)) as img:
                        writer.write(np.asarray(img.convert("RGB"))[None])
            with open(path, "rb") as f:
                return f.read()
        finally:
            if os.path.exists(path):
                os.remove(path)

    # -- the stream -------------------------------------------------------------------------------------------
    async def websocket(self, request):
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=1 << 16)
        await ws.prepare(request)
        tab = Tab(self, ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await tab.handle(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await tab.send({"type": "error", "about": "message", "message": "binary messages are not "
                                    "understood here; upload images with POST /api/upload"})
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            await tab.stop(reason="the tab closed")
        return ws


class Tab:
    """One WebSocket: at most one stream at a time, the switch options, the sender that paces frames."""

    def __init__(self, studio: Studio, ws: web.WebSocketResponse):
        self.studio, self.ws = studio, ws
        self.loop = asyncio.get_running_loop()
        self.stream: Stream | None = None
        self.sender: asyncio.Task | None = None
        self.toggles = SWITCH_TOGGLES + (("edit",) if studio.model.edit is not None else ())
        self.options = {name: name != "edit" for name in self.toggles}
        self.recording: Recording | None = None
        self.person = None

    async def send(self, message: dict) -> None:
        if not self.ws.closed:
            try:
                await self.ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):
                pass

    def notify(self, message: dict) -> None:
        """From any thread."""
        asyncio.run_coroutine_threadsafe(self.send(message), self.loop)

    async def error(self, about: str, message: str, **extra) -> None:
        await self.send({"type": "error", "about": about, "message": message, **extra})

    async def handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as e:
            return await self.error("message", f"malformed message (not JSON: {e}); the stream goes on")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return await self.error("message", "malformed message: expected a JSON object with a \"type\" (start, "
                                    "stop, switch, options); the stream goes on")
        kind = message["type"]
        handler = {"start": self.start, "stop": self.on_stop, "switch": self.switch,
                   "options": self.set_options}.get(kind)
        if handler is None:
            return await self.error("message", f"unknown message type {kind!r} (start, stop, switch, options); the "
                                    "stream goes on")
        try:
            await handler(message)
        except ValueError as e:
            await self.error(kind, str(e))

    def _options(self, given) -> dict:
        if given is None:
            return {}
        if not isinstance(given, dict) or any(k not in self.toggles or not isinstance(v, bool)
                                              for k, v in given.items()):
            extra = "" if "edit" in self.toggles else " (\"edit\" needs a server started with --edit)"
            raise ValueError(f"options must map {', '.join(self.toggles)} to true/false; got {given!r}{extra}")
        return given

    async def set_options(self, message: dict) -> None:
        self.options.update(self._options({k: v for k, v in message.items() if k != "type"}))
        await self.send({"type": "status", "state": "options", "options": self.options,
                         "message": "switch options set (applied to the next switch)"})

    async def start(self, message: dict) -> None:
        studio = self.studio
        reference, person = studio.image(message.get("person"), "person")
        garment, garment_item = studio.image(message.get("garment"), "garment")
        prompt = message.get("prompt") or ""
        if not isinstance(prompt, str) or len(prompt) > 2000:
            raise ValueError("prompt: expected text of at most 2000 characters")
        if not prompt.strip() and person is not None:
            prompt = person.caption_with(garment_item.garment if garment_item else None)
        await self.stop(reason="a new start")
        session = studio.pool.acquire()
        if session is None:
            n = studio.pool.running
            await self.send({"type": "busy", "running": n, "max_streams": studio.pool.size,
                             "message": f"busy: {n} streams running (the limit is {studio.pool.size}), try again "
                                        "when one stops"})
            return
        try:
            context, notes = await self.loop.run_in_executor(None, studio.prompts.encode, prompt)
        except Exception:
            studio.pool.release(session)
            raise
        for note in notes:
            await self.send({"type": "warning", "about": "prompt", "message": note})
        self.person = person
        self.recording = studio.record()
        stream = Stream(session, self.loop, self.notify, lambda: studio.pool.release(session),
                        edit=studio.model.edit)
        self.stream = stream
        stream.start(reference, garment, message["garment"], context)
        self.sender = asyncio.create_task(self.pump(stream, self.recording))
        await self.send({"type": "status", "state": "started", "prompt": prompt, "person": message["person"],
                         "garment": message["garment"], "recording": self.recording.url,
                         "running": studio.pool.running, "max_streams": studio.pool.size,
                         "message": "stream started"})

    async def on_stop(self, message: dict) -> None:
        if self.stream is None:
            raise ValueError("stop: no stream is running")
        await self.stop(reason="stopped")

    async def stop(self, reason: str) -> None:
        stream, sender = self.stream, self.sender
        self.stream = self.sender = None
        if stream is None:
            return
        stream.stop()
        if sender is not None:
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):
                pass
        if stream.thread is not None:  # the slot is free once the thread is out (at most one chunk)
            await self.loop.run_in_executor(None, stream.thread.join, 30)
        await self.send({"type": "status", "state": "stopped", "message": f"stream stopped ({reason})",
                         "recording": self.recording.url if self.recording else None})

    async def switch(self, message: dict) -> None:
        if self.stream is None:
            raise ValueError("switch before start: start a stream first, then pick a garment to switch to")
        image, _ = self.studio.image(message.get("garment"), "garment")
        options = {**self.options, **self._options(message.get("options"))}
        self.stream.request_switch(image, message["garment"], options, message.get("seq"))
        await self.send({"type": "status", "state": "switch_queued", "seq": message.get("seq"),
                         "garment": message["garment"], "options": options,
                         "message": "switch queued for the next chunk"})

    async def pump(self, stream: Stream, recording: Recording) -> None:
        """Send the chunks' frames at the video's fps (a clock; after a stall it restarts from now)."""
        period = 1.0 / self.studio.fps
        due = None
        sent = 0
        while True:
            chunk = await stream.chunks.get()
            if chunk is END:
                return
            stream.credits.release()  # the next chunk may be generated while this one plays
            await self.send({"type": "chunk", "index": chunk.index, "first_frame": chunk.first_frame,
                             "frames": len(chunk.jpegs), "garment": chunk.garment, "generate_ms": chunk.generate_ms,
                             "switch": chunk.switch, "sent_frames": sent})
            for i, data in enumerate(chunk.jpegs):
                now = self.loop.time()
                if due is None or now - due > 12 * period:
                    due = now
                if due > now:
                    await asyncio.sleep(due - now)
                if self.ws.closed:
                    return
                try:
                    await self.ws.send_bytes(struct.pack(">II", chunk.first_frame + i, chunk.index) + data)
                except (ConnectionError, RuntimeError):
                    return
                recording.jpegs.append(data)
                sent += 1
                due += period


def make_app(studio: Studio) -> web.Application:
    app = web.Application(client_max_size=studio.uploads.max_bytes + (1 << 16))
    app.add_routes([
        web.get("/", studio.index),
        web.get("/api/info", studio.info),
        web.get("/gallery/{id}.png", studio.gallery_png),
        web.post("/api/upload", studio.upload),
        web.get("/uploads/{id}.png", studio.upload_png),
        web.get("/recordings/{token}.mp4", studio.recording),
        web.get("/ws", studio.websocket),
        web.static("/static", STATIC),
    ])
    return app


async def serve(studio: Studio, host: str, port: int):
    """Start the server; (runner, the URL it listens on)."""
    runner = web.AppRunner(make_app(studio), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}/"
