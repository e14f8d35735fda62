"""One VLM question with images whose answer must be a JSON object of given fields (through
`fc_jax.vlm.VLMClient`). An answer that is not such an object raises `AnswerError` naming what is wrong."""

from __future__ import annotations

import json
import re

import numpy as np

from fc_jax.vlm import VLMClient, image_part


class AnswerError(ValueError):
    """The VLM answered, but not with the JSON asked for."""


def parse_json_answer(text: str, fields: dict[str, type]) -> dict:
    """The JSON object in `text` (a ```json fence is allowed) with each of `fields` of its type."""
    match = re.search(r"\{.*\}", text or "", re.DOTALL)
    if match is None:
        raise AnswerError(f"no JSON object in the answer {text[:200]!r}")
    try:
        answer = json.loads(match.group(0))
    except json.JSONDecodeError as e:
        raise AnswerError(f"the answer's JSON does not parse ({e}): {text[:200]!r}") from e
    if not isinstance(answer, dict):
        raise AnswerError(f"the answer is not a JSON object: {text[:200]!r}")
    for name, kind in fields.items():
        if not isinstance(answer.get(name), kind):
            raise AnswerError(f"field {name!r} should be {kind.__name__}, got {answer.get(name)!r}")
    return answer


def ask_json(client: VLMClient, model: str, prompt: str, images: list[np.ndarray], fields: dict[str, type],
             max_tokens: int = 512) -> dict:
    """Ask `prompt` about `images` (in order); the parsed answer (see `parse_json_answer`)."""
    content = [image_part(im) for im in images] + [{"type": "text", "text": prompt}]
    response = client.chat(model, [{"role": "user", "content": content}], json_mode=True, max_tokens=max_tokens)
    try:
        text = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise AnswerError(f"no message in the response {json.dumps(response)[:200]}") from e
    return parse_json_answer(text, fields)
