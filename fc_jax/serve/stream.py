"""One browser tab's stream: a generation thread over a pooled StreamingSession, at most one chunk ahead of
playback, with live garment switches (the latest click wins) applied at the next chunk boundary.

The thread and the event loop meet in two places: `credits` (a semaphore: the thread generates a chunk only
when it holds one, and the sender gives one back when it starts playing a chunk, so at most one generated chunk
waits behind the one playing) and `chunks` (an asyncio queue the thread fills with `call_soon_threadsafe`).
A switch is stored in `_pending` (replacing an earlier one not applied yet) and taken by the thread before its
next chunk. Latency of a switch: from its arrival to the end of the first chunk generated with the new garment,
in ms, and in chunk boundaries (0: the thread was waiting and the very next chunk has it; 1: a chunk in progress
had to finish first).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
import time

import numpy as np
from PIL import Image

END = None  # the last item on `chunks`


@dataclasses.dataclass
class Chunk:
    index: int
    first_frame: int  # stream-global frame number of the chunk's first frame
    jpegs: list[bytes]
    garment: str  # the id of the garment it was generated with
    generate_ms: float
    switch: dict | None = None  # {"seq", "garment", "latency_ms", "latency_chunks", "options"} of a switch it shows


@dataclasses.dataclass
class Switch:
    image: object
    garment: str
    options: dict
    seq: object
    received: float  # time.perf_counter() at arrival
    completed_at_arrival: int  # chunks finished by then


def jpeg(frame: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class Stream:
    """Generation for one stream; `notify(dict)` sends a JSON message to the tab (thread-safe, set by the
    caller), `on_exit()` runs in the thread when it ends (the session goes back to the pool there)."""

    def __init__(self, session, loop: asyncio.AbstractEventLoop, notify, on_exit, ahead: int = 1,
                 quality: int = 90, edit=None):
        self.session = session
        self.edit = edit  # the plug-in edit a switch with options["edit"] runs in place of the built-in one
        self.loop = loop
        self.notify = notify
        self.on_exit = on_exit
        self.quality = quality
        self.chunks: asyncio.Queue = asyncio.Queue()
        self.credits = threading.Semaphore(ahead)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._pending: Switch | None = None
        self._completed = 0
        self.garment = ""
        self.thread: threading.Thread | None = None

    def start(self, reference, garment_image, garment_id: str, context) -> None:
        self.garment = garment_id
        self.thread = threading.Thread(target=self._run, args=(reference, garment_image, context), daemon=True,
                                       name="fc_jax.serve stream")
        self.thread.start()

    def request_switch(self, image, garment_id: str, options: dict, seq) -> None:
        """Queue a switch for the next chunk; an earlier one not applied yet is dropped (and said so)."""
        with self._lock:
            replaced = self._pending
            self._pending = Switch(image, garment_id, dict(options), seq, time.perf_counter(), self._completed)
        if replaced is not None:
            self.notify({"type": "status", "state": "switch_replaced", "seq": replaced.seq,
                         "message": f"switch to {replaced.garment} replaced by a later click (only the latest "
                                    "pending switch applies)"})

    def stop(self) -> None:
        self.stopping.set()
        self.credits.release()  # wake the thread if it waits for a credit

    def _put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.chunks.put_nowait, item)

    def _run(self, reference, garment_image, context) -> None:
        try:
            self.session.start(reference, garment_image, context=context)
            index, info = 0, None
            while not self.stopping.is_set():
                ready = self.credits.acquire(timeout=0.05)
                if self.stopping.is_set():
                    return
                with self._lock:
                    switch, self._pending = self._pending, None
                if switch is not None:  # applied at once, also while waiting for playback to need a chunk
                    try:
                        options = dict(switch.options)
                        if options.pop("edit", False):
                            self.session.switch_garment(switch.image, edit=self.edit)
                        else:
                            self.session.switch_garment(switch.image, **options)
                        self.garment = switch.garment
                        info = switch
                    except (OSError, ValueError) as e:
                        self.notify({"type": "error", "about": "switch", "seq": switch.seq,
                                     "message": f"switch failed, the stream goes on with the old garment: {e}"})
                if not ready:
                    continue
                started = time.perf_counter()
                first = self.session.frames_made
                frames = self.session.next_chunk()
                done = time.perf_counter()
                chunk = Chunk(index, first, [jpeg(f, self.quality) for f in frames], self.garment,
                              round((done - started) * 1e3, 1))
                if info is not None:
                    chunk.switch = {"seq": info.seq, "garment": info.garment, "options": info.options,
                                    "latency_ms": round((done - info.received) * 1e3, 1),
                                    "latency_chunks": index - info.completed_at_arrival}
                with self._lock:
                    self._completed = index + 1
                self._put(chunk)
                index, info = index + 1, None
        except Exception as e:  # a failed stream says why; the server goes on
            self.notify({"type": "error", "about": "stream", "message": f"the stream stopped: {type(e).__name__}: "
                                                                        f"{e}"})
        finally:
            self._put(END)
            self.on_exit()
