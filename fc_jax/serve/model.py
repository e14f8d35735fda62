"""What the studio serves: the loaded model (`Model`), its prompts -> context (`Prompts`), and the session pool
(`SessionPool`): `size` StreamingSession objects built and warmed (compiled) once, lent to one stream each."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Callable

import numpy as np

from fc_jax.sampling.streaming import StreamingSession, SwitchOptions

SWITCH_TOGGLES = ("refresh", "withdraw", "disentangle")


@dataclasses.dataclass
class Model:
    """A loaded model: config, parameters, the decoder and `texts` (prompts -> (embeddings, lengths)).
    `vocabulary`: the tokenizer's words when prompts are read word by word (the tiny world), else None;
    `random`: random weights (a smoke run; prompts do not matter); `description`: what it is, for the page;
    `edit`: a plug-in KV edit (`fc_jax.kv_edits` protocol, `--edit`) a switch may run in place of the built-in
    one, named `edit_name`."""

    config: object
    dit_params: object
    vae_params: object
    texts: Callable
    decoder: str = "vae"
    light_params: object = None
    vocabulary: frozenset | None = None
    random: bool = False
    description: str = ""
    edit: Callable | None = None
    edit_name: str = ""


class Prompts:
    """prompt -> (context [1, Lt, D] float32, notes for the user). Thread-safe (the text cache is shared)."""

    def __init__(self, model: Model):
        self.model = model
        self._lock = threading.Lock()

    def unknown_words(self, prompt: str) -> list[str]:
        if self.model.vocabulary is None:
            return []
        from fc_jax.tinyworld.text import words

        return list(dict.fromkeys(w for w in words(prompt) if w not in self.model.vocabulary))

    def encode(self, prompt: str) -> tuple[np.ndarray, list[str]]:
        """ValueError (a message for the user) when the prompt cannot be encoded at all."""
        notes = []
        unknown = self.unknown_words(prompt)
        if unknown:
            notes.append(f"words outside the tiny world's vocabulary are read as <unk>: {', '.join(unknown[:12])}"
                         + (" ..." if len(unknown) > 12 else ""))
        if self.model.random:
            notes.append("random weights: the prompt does not change anything")
        with self._lock:
            try:
                embeddings, _ = self.model.texts([prompt])
            except KeyError as e:
                raise ValueError(f"this model's text cache has no embedding of that prompt and no text encoder to "
                                 f"make one ({e}); use a prompt it holds") from e
        return np.asarray(embeddings[:1], np.float32), notes


def switch_combinations():
    """Every refresh / withdraw / disentangle combination, the default (all on) first."""
    return [dict(zip(SWITCH_TOGGLES, bits)) for bits in itertools.product((True, False), repeat=3)]


class SessionPool:
    """`size` sessions of one model, pre-built; `acquire()` lends one (None when all are lent: the caller
    refuses the stream), `release(session)` returns it. The sessions share their compiled functions."""

    def __init__(self, model: Model, context: np.ndarray, size: int, seed: int = 0):
        if size < 1:
            raise ValueError(f"the pool needs at least one session; got {size}")
        self.size = size
        self.free = [StreamingSession(model.config, model.dit_params, model.vae_params, context, seed=seed,
                                      switch=SwitchOptions(), decoder=model.decoder,
                                      light_decoder_params=model.light_params) for _ in range(size)]
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        with self._lock:
            return self.size - len(self.free)

    def acquire(self) -> StreamingSession | None:
        with self._lock:
            return self.free.pop() if self.free else None

    def release(self, session: StreamingSession) -> None:
        with self._lock:
            if session not in self.free:
                self.free.append(session)

    def warm(self, reference, garment, switch_garment, combinations=None, log=None, edit=None) -> None:
        """Compile what a stream runs before any client comes: a start, the first chunk (9 frames), a later one
        (12), a switch for each option combination (default: all eight), the plug-in `edit`'s switch if there
        is one, and a chunk after it. The sessions share compiled functions, so the first session compiles and
        the others only run once."""
        combos = switch_combinations() if combinations is None else combinations
        for i, session in enumerate(self.free):
            session.start(reference, garment)
            session.next_chunk()
            session.next_chunk()
            for options in (combos if i == 0 else combos[:1]):
                session.switch_garment(switch_garment, **options)
                if log:
                    log(f"warmed switch {options}")
            if edit is not None and i == 0:
                session.switch_garment(switch_garment, edit=edit)
            session.next_chunk()
