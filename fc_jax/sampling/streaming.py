"""The real-time generator: a streaming session that makes video chunk by chunk and switches garments live.

Per chunk (3 latent frames): the few-step schedule (model timesteps [1000, 937, 833, 625] at shift 5, x0
predicted, fresh noise between steps), the t = 0 commit pass that writes the chunk's K/V, then a streaming decode:
the VAE's decoder (`decoder="vae"`) or the light decoder (`decoder="light"`, `fc_jax.models.light_decoder`, the
same frame rule; switches still re-encode with the VAE's encoder). The first chunk's latent frame 0 decodes to one video frame, so chunk 0 gives 9 frames and every later
chunk 12: N frames need N = 12k − 3 (`fc_jax.sampling.frames`).

A stream runs as long as it is asked to: before a chunk would reach past the RoPE table (`rope_max_positions`
frames), the whole cache is moved back along the frame axis (`kv_cache.shift_positions`, exact: attention sees
only relative positions), so the next chunk sits at frame 2 again.

A switch (`switch_garment`) re-encodes the last generated frame as a single image for the reference, encodes the
new garment, and applies `kv_cache.switch_garment` (refresh + withdraw + disentangle, each switchable). Every
input is read and checked before the cache is touched, so a failed switch leaves the session as it was.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import flow, images, kv_cache, kv_probes
from fc_jax.models import dit, light_decoder, vae
from fc_jax.sampling.frames import chunk_count, chunk_start, switch_chunks
from fc_jax.sampling.student import denoise_chunk


@dataclasses.dataclass(frozen=True)
class SwitchOptions:
    """Which parts of the garment switch run (the paper's method: all three) and how history is withdrawn."""

    refresh: bool = True
    withdraw: bool = True
    disentangle: bool = True
    keep_frames: int = 0
    rebase: bool = False


def student_chunk(model, params, cache: kv_cache.KVCache, key, timesteps, sigmas):
    """One chunk of the few-step student, fused: every step of the schedule (`student.denoise_chunk`: start from
    noise, predict x0 from the cache, re-noise it with fresh noise to the next step's level), then the t = 0 commit
    pass.

    timesteps, sigmas: [S] model timesteps and noise levels (`flow.student_schedule`). Returns (clean latents
    [B, chunk_frames, h, w, C], the cache with the chunk committed).
    """
    _, x0 = denoise_chunk(model, params, cache, key, timesteps, sigmas, timesteps.shape[0])
    return x0, kv_cache.commit(model, params, cache, x0)


def probed_student_chunk(model, params, cache: kv_cache.KVCache, key, timesteps, sigmas):
    """`student_chunk` that also probes where the chunk's last denoising step looks (`kv_probes.probe` at that
    step's input and timestep, on the cache it denoised over): (x0, cache, Probes)."""
    x, x0 = denoise_chunk(model, params, cache, key, timesteps, sigmas, timesteps.shape[0])
    probes = kv_probes.probe(model, params, cache, x, timesteps[-1])
    return x0, kv_cache.commit(model, params, cache, x0), probes


DECODERS = ("vae", "light")


class StreamingSession:
    """One stream: `start(reference, garment)`, then `next_chunk()` repeatedly, `switch_garment(image)` between
    chunks. Images may be paths, PIL images or uint8 arrays of any size (preprocessed as the authors do).
    `decoder`: "vae" (the VAE's streaming decoder) or "light" (`light_decoder_params`' light decoder).
    `probe`: every chunk also records its attention probes (`probed_student_chunk`) in `probe_log`: per chunk
    {"chunk", "first_frame", "after_switch", "mass": `Probes.summary()`}."""

    def __init__(self, config, dit_params, vae_params, context, *, seed: int = 0,
                 switch: SwitchOptions = SwitchOptions(), decoder: str = "vae", light_decoder_params=None,
                 probe: bool = False):
        if decoder not in DECODERS:
            raise ValueError(f"decoder {decoder!r}: expected one of {DECODERS}")
        if (decoder == "light") != (light_decoder_params is not None):
            raise ValueError(f"decoder={decoder!r} with light_decoder_params "
                             f"{'missing' if light_decoder_params is None else 'given'}: the light decoder needs "
                             "its parameters, and they are used only with decoder='light'")
        self.decoder = decoder
        self.light_decoder_params = light_decoder_params
        self.config = config
        self.model = dit.build_model(config)
        self.dit_params = dit_params
        self.vae_params = vae_params
        self.context = jnp.asarray(context)
        self.switch_options = switch
        self.height, self.width = config.video.height, config.video.width
        if self.height % 16 or self.width % 16:
            raise ValueError(f"video size must be divisible by 16; config has {self.height}x{self.width}")
        self.latent_h, self.latent_w = self.height // 16, self.width // 16
        self.spec = kv_cache.CacheSpec.from_config(config, self.latent_h, self.latent_w)
        timesteps, sigmas = flow.student_schedule(config.sampling.student_timesteps, config.sampling.shift)
        self.timesteps, self.sigmas = jnp.asarray(timesteps, jnp.float32), jnp.asarray(sigmas, jnp.float32)
        self.ops = kv_cache.Ops(self.model, donate=True)
        self.probe = probe
        self.probe_log: list[dict] = []
        self._switched = False  # a switch ran since the last chunk (for the probe log)
        self._chunk = kv_cache.jit_op(probed_student_chunk if probe else student_chunk, self.model, donate=True)
        self._key = jax.random.key(seed)
        self._cache = None
        self._decode_state = None  # the streaming decoder's cache / state
        self._last_frame = None  # [1, H, W, 3] in [-1, 1]
        self.chunks_made = 0  # chunks decoded (next_chunk)
        self._chunks_denoised = 0  # chunks committed to the cache (next_latents): chunk k's noise is key k's
        self.frames_made = 0
        self.position_shifts = 0  # times the cache was moved back along the RoPE frame axis

    @property
    def cache(self) -> kv_cache.KVCache:
        """The stream's KV cache now (read it, e.g. to probe; the next chunk or edit donates its buffers, so do
        not keep it across calls)."""
        self._require_started("cache")
        return self._cache

    # -- conditions -------------------------------------------------------------------------------------------
    def _encode(self, pixels: np.ndarray):
        return vae.encode_image(self.vae_params, jnp.asarray(pixels)[None])

    def garment_latent(self, garment):
        """A garment image's latents [1, 1, h, w, C] (what the cache's condition block and edits take)."""
        return self._encode(images.garment_image(garment, self.height, self.width))

    def start(self, reference, garment, context=None) -> None:
        """Prefill the condition block from a person image and a garment image. `context` (optional, the shape
        of the session's, [1, Lt, text_dim]) becomes the session's prompt embedding from this stream on, so one
        session (and its compiled functions) serves many prompts; None keeps the current one."""
        self._check_context(context, "start()")
        ref = self._encode(images.reference_image(reference, self.height, self.width))
        self.start_from_latents(ref, self.garment_latent(garment), context)

    def start_from_latents(self, reference_latent, garment_latent, context=None) -> None:
        """`start` from condition latents already encoded (e.g. a catalogue's garments, encoded once): the
        reference's and the garment's [1, 1, h, w, C], as `vae.encode_image` gives them."""
        context = self._check_context(context, "start_from_latents()")
        want = (1, 1, self.latent_h, self.latent_w, self.model.cfg.in_channels)
        for name, latent in (("reference_latent", reference_latent), ("garment_latent", garment_latent)):
            if tuple(latent.shape) != want:
                raise ValueError(f"start_from_latents(): {name} must be [1, 1, h, w, C] = {want}; found "
                                 f"{tuple(latent.shape)}")
        ref, gar = jnp.asarray(reference_latent), jnp.asarray(garment_latent)
        cache = kv_cache.init_cache(self.model, self.spec, 1, self.latent_h, self.latent_w)
        self._cache = self.ops.prefill(self.dit_params, cache, ref, gar, context)
        self.context = context
        self._decode_state = self._fresh_decode_state()
        self._last_frame, self.chunks_made, self._chunks_denoised, self.frames_made = None, 0, 0, 0
        self.probe_log, self._switched = [], False

    def _check_context(self, context, what: str):
        """The prompt embedding a start uses: the session's where `context` is None, else `context` (checked)."""
        context = self.context if context is None else jnp.asarray(context)
        if context.shape != self.context.shape:
            raise ValueError(f"{what}: context must have the session's shape {self.context.shape}; "
                             f"found {context.shape}")
        return context

    def _fresh_decode_state(self):
        if self.decoder == "light":
            return light_decoder.init_state(self.light_decoder_params, 1, self.latent_h, self.latent_w)
        return vae.init_decode_cache(self.config, 1, self.latent_h, self.latent_w)

    def decode_next(self, latents):
        """Stream the next chunk's latents [1, t, h, w, 48] through the session's decoder: frames [1, n, H, W, 3]
        in [-1, 1] (n = 4(t-1)+1 for the stream's first chunk, else 4t)."""
        if self.decoder == "light":
            frames, self._decode_state = light_decoder.decode_chunk(self.light_decoder_params, self._decode_state,
                                                                     latents)
        else:
            frames, self._decode_state = vae.decode_chunk(self.vae_params, self._decode_state, latents)
        return frames

    def _require_started(self, what: str) -> None:
        if self._cache is None:
            raise RuntimeError(f"{what} before start(reference, garment): there is no stream yet")

    # -- generation -------------------------------------------------------------------------------------------
    def _keep_positions_in_table(self) -> None:
        """Before the next chunk would read past the RoPE table (frames [0, rope_max_positions)), move the whole
        cache back (`kv_cache.shift_positions`) so that chunk sits at frame 2, as the first chunk after a prefill."""
        next_frame = int(self._cache.next_frame)
        if next_frame + self.spec.chunk_frames <= self.model.cfg.rope_max_positions:
            return
        offset = self.spec.cond_frames - next_frame
        self._cache = self.ops.shift_positions(self._cache, np.int32(offset))
        self.position_shifts += 1

    def next_latents(self):
        """Denoise and commit the next chunk; its clean latents [1, chunk_frames, h, w, 48]."""
        self._require_started("next_chunk()")
        self._keep_positions_in_table()
        key = jax.random.fold_in(self._key, self._chunks_denoised)
        out = self._chunk(self.dit_params, self._cache, key, self.timesteps, self.sigmas)
        x0, self._cache = out[:2]
        if self.probe:
            self.probe_log.append({"chunk": self._chunks_denoised, "first_frame": chunk_start(self._chunks_denoised),
                                   "after_switch": self._switched, "mass": out[2].summary()})
        self._switched = False
        self._chunks_denoised += 1
        return x0

    def next_chunk(self, with_latents: bool = False):
        """Generate, commit and decode the next chunk: uint8 frames [n, H, W, 3] (n = 9 first, then 12), and with
        `with_latents` also its clean latents [1, chunk_frames, h, w, 48] (what the decoder got)."""
        latents = self.next_latents()
        frames = self.decode_next(latents)
        self._last_frame = frames[:, -1]
        self.chunks_made += 1
        self.frames_made += frames.shape[1]
        pixels = np.asarray(images.to_uint8_on_device(frames[0]))
        return (pixels, latents) if with_latents else pixels

    # -- interaction ------------------------------------------------------------------------------------------
    def apply_edit(self, edit, **kwargs) -> None:
        """Run a KV edit (`fc_jax.kv_edits`: `edit(model, params, cache, **kwargs) -> cache`) on the stream's
        cache between chunks, jit-compiled once per edit with the cache donated; `kwargs` are arrays or numbers
        (traced). An edit that fails while it is traced leaves the session as it was (nothing was donated)."""
        self._require_started("apply_edit()")
        self._cache = kv_cache.jit_op(edit, self.model, donate=True)(self.dit_params, self._cache, **kwargs)
        self._switched = True

    def last_frame_latent(self):
        """The last generated frame re-encoded as a single image [1, 1, h, w, C], the disentangled reference
        of a switch (the stream's reference before any chunk)."""
        if self._last_frame is None:
            return self._cache.reference
        return vae.encode_image(self.vae_params, self._last_frame)

    def switch_garment(self, garment, edit=None, **overrides) -> None:
        """Switch to a new garment between chunks; `overrides` change fields of the session's SwitchOptions.
        `edit` (a `fc_jax.kv_edits` edit, in place of the built-in switch) is called with `garment=` the new
        garment's latents and `reference=` the last frame re-encoded."""
        self._require_started("switch_garment()")
        if edit is not None and overrides:
            raise ValueError(f"switch_garment: an edit replaces the built-in switch; its options {sorted(overrides)} "
                             "do not apply")
        options = dataclasses.replace(self.switch_options, **overrides)
        garment_latent = self.garment_latent(garment)  # reads and checks the image before the cache is touched
        if edit is not None:
            self.apply_edit(edit, garment=garment_latent, reference=self.last_frame_latent())
            return
        reference = self.last_frame_latent() if options.disentangle else None
        self._cache = self.ops.switch_garment(
            self.dit_params, self._cache, garment_latent, reference,
            refresh=options.refresh, withdraw=options.withdraw, disentangle=options.disentangle,
            keep_frames=options.keep_frames, rebase=options.rebase,
        )
        self._switched = True

    def stream(self, num_frames: int, switches: Mapping[int, object] | None = None,
               progress: bool = True, edit=None, with_latents: bool = False) -> Iterator:
        """Yield uint8 frame chunks until `num_frames` frames are made, switching garments at the given frames
        (each applied before the first chunk starting at or after its frame; by `edit` if given, see
        `switch_garment`); with `with_latents`, (frames, latents) pairs as `next_chunk`. Call `start` first."""
        self._require_started("stream()")
        chunks = chunk_count(num_frames, self.spec.chunk_frames)
        plan = switch_chunks(switches or {}, num_frames, self.spec.chunk_frames)
        for image in plan.values():  # fail before generating anything if a switch image is unreadable
            images.load_image(image)
        start = time.perf_counter()
        for c in range(chunks):
            if c in plan:
                self.switch_garment(plan[c], edit=edit)
                if progress:
                    print(f"switched garment before frame {self.frames_made}", file=sys.stderr)
            out = self.next_chunk(with_latents)
            if progress:
                elapsed = time.perf_counter() - start
                rate = self.frames_made / elapsed
                eta = (num_frames - self.frames_made) / max(rate, 1e-9)
                print(f"chunk {c + 1}/{chunks}: {self.frames_made}/{num_frames} frames, "
                      f"{rate:.2f} frames/s, eta {eta:.0f}s", file=sys.stderr)
            yield out
