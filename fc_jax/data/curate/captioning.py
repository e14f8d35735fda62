"""Stage 2: static / dynamic captions. The VLM sees evenly spread frames of the clip and writes, as JSON, a
static caption (scene, the person's appearance and clothes) and a dynamic one (action, motion, camera), each
short (one sentence) and long (a paragraph)."""

from __future__ import annotations

from fc_jax.data.curate.ask import AnswerError, ask_json
from fc_jax.video import evenly_spaced

PROMPT = (
    "These are frames of one video clip, in order. Describe it as a JSON object with exactly these fields: "
    '"static_short", "static_long": the scene and the person\'s appearance and clothing (what does not change), '
    'in one sentence and in one detailed paragraph; "dynamic_short", "dynamic_long": the person\'s action, body '
    "motion and camera motion (what changes), in one sentence and in one detailed paragraph. Answer with the "
    "JSON object only."
)
FIELDS = ("static_short", "static_long", "dynamic_short", "dynamic_long")


def caption_clip(client, model: str, frames, count: int, max_tokens: int = 512) -> dict:
    """The four captions of a clip (uint8 [F, H, W, 3]); `AnswerError` if the VLM's JSON is malformed or empty."""
    images = [frames[i] for i in evenly_spaced(len(frames), min(count, len(frames)))]
    answer = ask_json(client, model, PROMPT, images, {f: str for f in FIELDS}, max_tokens)
    empty = [f for f in FIELDS if not answer[f].strip()]
    if empty:
        raise AnswerError(f"empty captions: {empty}")
    return {f: answer[f].strip() for f in FIELDS}
