"""Stage 3: garment extraction (try-off). The edit backend turns the clip's first frame into a product image of
the worn garment on white; the VLM then checks that it is the same garment (semantics) with the same texture
(colour, pattern, material) and names its type, which must be one of the configured types."""

from __future__ import annotations

import numpy as np

from fc_jax.data.curate.ask import ask_json

EDIT_PROMPT = (
    "Extract the main garment the person is wearing and show it alone as a flat product photo, front view, "
    "centred on a plain white background, with exactly the same colours, pattern, texture and details. "
    "No person, no mannequin."
)


def validation_prompt(types: list[str]) -> str:
    return (
        "Image 1 shows a person; image 2 should be a product photo of the main garment the person wears. "
        "Answer with a JSON object: \"same_garment\" (true if image 2 is the same kind of garment as worn in "
        "image 1), \"same_texture\" (true if its colours, pattern and material match), \"garment_type\" (one of "
        f"{', '.join(types)}), \"reason\" (one short sentence)."
    )


def extract_garment(frame: np.ndarray, backend, client, model: str, types: list[str]) -> tuple[np.ndarray, dict, str]:
    """(garment image, the VLM's verdict, rejection reason or "") for one first frame."""
    garment = backend.edit(EDIT_PROMPT, [frame])
    verdict = ask_json(client, model, validation_prompt(types), [frame, garment],
                       {"same_garment": bool, "same_texture": bool, "garment_type": str})
    verdict["garment_type"] = verdict["garment_type"].strip().lower()
    if not verdict["same_garment"] or not verdict["same_texture"]:
        return garment, verdict, f"try-off validation: not the worn garment ({verdict.get('reason', 'no reason')})"
    if verdict["garment_type"] not in types:
        return garment, verdict, f"try-off validation: garment type {verdict['garment_type']!r} not in {types}"
    return garment, verdict, ""
