"""The metrics served by vision-language models through `fc_jax.vlm.VLMClient` (REFERENCE §7):

- **HGC / LGC / NTP**: the judge (`fc_jax.eval.judge`), one chat completion per sample, JSON output enforced.
- **GME**: `gme-Qwen2-VL-7B-Instruct` embeddings; the mean over 32 frames of the dot product of the normalised
  caption and frame embeddings. Texts go as `input` (prefixed with the reference's retrieval instruction), frames
  as a chat-style `messages` input (vLLM's multimodal embeddings API).
- **Smoo.**: Q-Align quality of a 3-frame window around every frame (the ends clipped), from the next-token
  log-probabilities of the five level words after "The quality of the video is" (excellent 1, good 0.75, fair 0.5,
  poor 0.25, bad 0; softmax over the words present among the top log-probabilities); a frame whose score jumps
  from the previous one by more than 0.025 is an artifact; score = 1 - artifacts / N.
"""

from __future__ import annotations

import math

import numpy as np

from fc_jax.eval.bench import load_image
from fc_jax.eval.judge import judge_messages, parse_judgement
from fc_jax.eval.metrics.base import MetricResult
from fc_jax.video import VideoError, evenly_spaced
from fc_jax.vlm import VLMClient, VLMError, image_part

GME_INSTRUCTION = "Find an image that matches the given text."
QALIGN_LEVELS = {"excellent": 1.0, "good": 0.75, "fair": 0.5, "poor": 0.25, "bad": 0.0}
QALIGN_QUESTION = "How would you rate the quality of this video?"
QALIGN_PREFIX = "The quality of the video is"
ARTIFACT_JUMP = 0.025


class Judge:
    name = "judge"
    columns = ("hgc", "lgc", "ntp")

    def __init__(self, client: VLMClient, model: str, frames: int = 8):
        self.client, self.model, self.frames = client, model, frames
        self.backend = f"VLM judge {model} at {client.config.base_url} (our rubric prompt, temperature 0, JSON)"

    def __call__(self, sample, video) -> MetricResult:
        frames = [video.frames[i] for i in evenly_spaced(video.num_frames, self.frames)]
        messages = judge_messages(load_image(sample.src_image), load_image(sample.cloth_image), frames)
        response = self.client.chat(self.model, messages, json_mode=True, max_tokens=64)
        text = _content(response)
        scores = parse_judgement(text)
        return MetricResult({k.lower(): float(v) for k, v in scores.items()}, info={"judge_reply": text})


class GMEScore:
    name = "gme"
    columns = ("gme",)

    def __init__(self, client: VLMClient, model: str, frames: int = 32):
        self.client, self.model, self.frames = client, model, frames
        self.backend = f"GME embeddings {model} at {client.config.base_url}"

    def __call__(self, sample, video) -> MetricResult:
        text = _unit(self.client.embed(self.model, text=f"{GME_INSTRUCTION} {sample.caption}"))
        frames = [video.frames[i] for i in evenly_spaced(video.num_frames, self.frames)]
        embed = lambda f: _unit(self.client.embed(  # noqa: E731
            self.model, messages=[{"role": "user", "content": [image_part(f), {"type": "text", "text": ""}]}]))
        sims = [float(e @ text) for e in self.client.map(embed, frames)]
        return MetricResult({"gme": float(np.mean(sims))}, {"gme": sims})


class Smoothness:
    name = "smoo"
    columns = ("smoo",)

    def __init__(self, client: VLMClient, model: str, top_logprobs: int = 20):
        self.client, self.model, self.top_logprobs = client, model, top_logprobs
        self.backend = f"Q-Align {model} at {client.config.base_url} (level-word log-probabilities)"

    def window_quality(self, frames: list[np.ndarray]) -> float:
        messages = [{"role": "user", "content": [*[image_part(f) for f in frames],
                                                 {"type": "text", "text": QALIGN_QUESTION}]},
                    {"role": "assistant", "content": QALIGN_PREFIX}]
        response = self.client.chat(self.model, messages, max_tokens=1, top_logprobs=self.top_logprobs,
                                    extra={"continue_final_message": True, "add_generation_prompt": False})
        return qalign_score(response)

    def __call__(self, sample, video) -> MetricResult:
        n = video.num_frames
        if n < 3:
            raise VideoError(f"smoothness needs at least 3 frames, the video has {n}")
        windows = [[video.frames[j] for j in (max(i - 1, 0), i, min(i + 1, n - 1))] for i in range(n)]
        quality = self.client.map(self.window_quality, windows)
        artifacts = int(sum(abs(b - a) > ARTIFACT_JUMP for a, b in zip(quality, quality[1:])))
        return MetricResult({"smoo": 1.0 - artifacts / n}, {"qalign": quality}, {"artifacts": artifacts})


def qalign_score(response: dict) -> float:
    """Expected level from the first generated token's top log-probabilities; VLMError if no level word is there."""
    try:
        top = response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError) as e:
        raise VLMError(f"no token log-probabilities in the answer (does the server support logprobs?): "
                       f"{str(response)[:200]}") from e
    by_level: dict[str, float] = {}
    for entry in top:
        word = str(entry.get("token", "")).strip().lower()
        if word in QALIGN_LEVELS:
            p = math.exp(float(entry["logprob"]))
            by_level[word] = by_level.get(word, 0.0) + p
    if not by_level:
        raise VLMError(f"none of the level words {list(QALIGN_LEVELS)} among the top log-probabilities: "
                       f"{[e.get('token') for e in top]}")
    total = sum(by_level.values())
    return sum(QALIGN_LEVELS[w] * p / total for w, p in by_level.items())


def _content(response: dict) -> str:
    try:
        return str(response["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError) as e:
        raise VLMError(f"no message in the answer: {str(response)[:200]}") from e


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)
