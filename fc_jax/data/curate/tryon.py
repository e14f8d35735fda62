"""Stage 4: reference construction (try-on). For each clip, a garment of a compatible type is retrieved from
the pool of extracted garments (other source videos only; the same garment type; among the `candidates` least
similar by image embedding, one chosen at random seeded by the clip id), tried onto the clip's first frame by the
edit backend, and the VLM checks that the person's identity and pose are kept and the garment did change.

Embeddings: CLIP ViT-L/14 image embeddings (`fc_jax.models.reward.CLIPVision`, weights from `tryon.clip`), or,
when no CLIP weights are configured, a colour histogram of the garment's non-white pixels (appearance only)."""

from __future__ import annotations

import hashlib

import numpy as np

from fc_jax.data.curate.ask import ask_json


def histogram_embedding(image: np.ndarray, bins: int = 8) -> np.ndarray:
    """An L2-normalised RGB histogram [bins**3] of the pixels that are not near-white (the product background)."""
    pixels = image.reshape(-1, 3)
    pixels = pixels[(pixels < 240).any(axis=1)]
    if not len(pixels):
        pixels = image.reshape(-1, 3)
    hist, _ = np.histogramdd(pixels, bins=(bins,) * 3, range=((0, 256),) * 3)
    hist = hist.ravel().astype(np.float32)
    return hist / max(np.linalg.norm(hist), 1e-12)


class ClipEmbedder:
    """uint8 image -> L2-normalised CLIP image embedding, from a transformers CLIP checkpoint."""

    def __init__(self, src: str):
        import jax
        import jax.numpy as jnp

        from fc_jax.convert.reward import clip_config_from_folder, convert_clip_vision
        from fc_jax.models.reward import CLIPVision, clip_preprocess

        config = clip_config_from_folder(src)
        params = convert_clip_vision(src, config)
        model = CLIPVision(config)
        apply = jax.jit(lambda p, x: model.apply({"params": p}, clip_preprocess(x, config.image_size)))
        self._embed = lambda image: np.asarray(apply(params, jnp.asarray(image[None], jnp.float32) / 255.0))[0]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        e = self._embed(image)
        return e / max(np.linalg.norm(e), 1e-12)


def choose_garment(item: str, parent: str, garment_type: str, embedding: np.ndarray, pool: list[dict],
                   candidates: int, seed: int) -> dict | None:
    """A pool entry (dicts with id, parent, garment_type, embedding) of the same type from another video,
    among the `candidates` least similar to `embedding`; None if there is none."""
    options = [g for g in pool if g["garment_type"] == garment_type and g["parent"] != parent and g["id"] != item]
    if not options:
        return None
    options.sort(key=lambda g: (float(np.dot(g["embedding"], embedding)), g["id"]))
    rng = np.random.default_rng([seed, int(hashlib.sha1(item.encode()).hexdigest()[:8], 16)])
    return options[int(rng.integers(min(candidates, len(options))))]


def edit_prompt(garment_type: str) -> str:
    return (
        f"Dress the person in image 1 in the {garment_type} garment shown in image 2, replacing the {garment_type} "
        "they wear. Keep the person's identity, face, hair, body shape, pose, the other clothes, the background "
        "and the lighting exactly as they are."
    )


VALIDATION_PROMPT = (
    "Image 1 is the original photo; image 2 is the edited photo; image 3 is the garment that should now be worn. "
    'Answer with a JSON object: "same_identity" (true if image 2 shows the same person), "same_pose" (true if '
    'the pose and framing are kept), "garment_changed" (true if the person in image 2 wears the garment of image '
    '3 instead of the original one), "reason" (one short sentence).'
)


def try_on(frame: np.ndarray, garment: np.ndarray, garment_type: str, backend, client,
           model: str) -> tuple[np.ndarray, dict, str]:
    """(reference image, the VLM's verdict, rejection reason or "")."""
    reference = backend.edit(edit_prompt(garment_type), [frame, garment])
    verdict = ask_json(client, model, VALIDATION_PROMPT, [frame, reference, garment],
                       {"same_identity": bool, "same_pose": bool, "garment_changed": bool})
    failed = [k for k in ("same_identity", "same_pose", "garment_changed") if not verdict[k]]
    reason = f"try-on validation: {', '.join(failed)} false ({verdict.get('reason', 'no reason')})" if failed else ""
    return reference, verdict, reason
