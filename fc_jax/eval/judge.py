"""The VLM judge (REFERENCE §7): one judgement per sample of the reference image, the garment image and frames of
the video, as three integer scores 1-5 in one JSON object. The prompt is ours, written from the paper's rubric.

Answers are parsed strictly: the whole reply must be one JSON object with integer HGC, LGC, NTP in 1..5. The only
fallback is to take the first `{...}` object out of a reply that wraps it in prose or a code fence. Anything else
is counted as `unparsable` or `out_of_range` (never guessed) by raising `JudgeAnswerError`.
"""

from __future__ import annotations

import json
import re

import numpy as np

from fc_jax.vlm import image_part

KEYS = ("HGC", "LGC", "NTP")

JUDGE_PROMPT = """You are an expert judge of virtual try-on videos.
You get, in this order: (1) the REFERENCE image of a person, (2) the GARMENT image, (3) {num_frames} frames taken \
in order from a generated video that should show the person of the REFERENCE wearing the GARMENT while moving.

Score the video on three criteria, each an integer from 1 (very poor) to 5 (excellent):
- "HGC" (high-level garment consistency): is the garment in the video the GARMENT: the same category, shape, \
silhouette, length, fit and colours, worn the way it is meant to be worn, in every frame?
- "LGC" (low-level garment consistency): are the fine details of the GARMENT kept: patterns, prints, logos, text, \
stitching, buttons, fabric and texture? If patterns, logos or fabric are clearly wrong, LGC must be 2 or lower.
- "NTP" (non-target preservation): is everything that is not the garment kept from the REFERENCE: the face and \
identity, hair, skin, body shape, the other clothes, accessories and the background?

Judge only what you see. Reply with one JSON object and nothing else, for example {{"HGC": 4, "LGC": 3, "NTP": 5}}."""


class JudgeAnswerError(ValueError):
    """The judge's reply is not a valid judgement; `kind` is "unparsable" or "out_of_range"."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"judge answer {kind}: {message}")
        self.kind = kind


def judge_messages(reference: np.ndarray, garment: np.ndarray, frames: list[np.ndarray]) -> list[dict]:
    """The chat messages of one judgement: the rubric, then the images in the order the rubric names them."""
    content = [{"type": "text", "text": JUDGE_PROMPT.format(num_frames=len(frames))},
               {"type": "text", "text": "REFERENCE:"}, image_part(reference),
               {"type": "text", "text": "GARMENT:"}, image_part(garment),
               {"type": "text", "text": "VIDEO FRAMES:"}, *[image_part(f) for f in frames]]
    return [{"role": "user", "content": content}]


def parse_judgement(text: str) -> dict[str, int]:
    """The reply -> {"HGC": int, "LGC": int, "NTP": int}; JudgeAnswerError otherwise."""
    obj = _json_object(text)
    if obj is None:
        raise JudgeAnswerError("unparsable", f"no JSON object in {text[:200]!r}")
    lowered = {str(k).strip().upper(): v for k, v in obj.items()}
    missing = [k for k in KEYS if k not in lowered]
    if missing:
        raise JudgeAnswerError("unparsable", f"missing {missing} in {text[:200]!r}")
    scores = {}
    for k in KEYS:
        v = lowered[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
            raise JudgeAnswerError("unparsable", f"{k} is {v!r}, not an integer")
        if not 1 <= int(v) <= 5:
            raise JudgeAnswerError("out_of_range", f"{k} = {v} outside 1..5")
        scores[k] = int(v)
    return scores


def _json_object(text: str) -> dict | None:
    try:
        obj = json.loads(text.strip())
        return obj if isinstance(obj, dict) else None
    except json.JSONDecodeError:
        pass
    match = re.search(r"\{[^{}]*\}", text)
    if not match:
        return None
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
