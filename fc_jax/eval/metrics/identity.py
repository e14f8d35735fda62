"""Cur: face identity kept from the reference image (REFERENCE §7): 32 evenly spaced frames; largest face,
5-point aligned (`fc_jax.eval.faces`); CurricularFace IR-101 embedding, L2-normalised; the mean over frames with a
face of max(0, cos(reference, frame)). A video in which no sampled frame shows a face scores 0.0, as in the
reference scripts; `info.frames_with_face` says how many counted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.eval.bench import load_image
from fc_jax.eval.faces import FaceAligner
from fc_jax.eval.metrics.base import MetricResult
from fc_jax.models.iresnet import IResNet, IResNetConfig
from fc_jax.video import evenly_spaced


class FaceEmbedder:
    """Aligned faces [N, 112, 112, 3] in [-1, 1] -> L2-normalised IR embeddings [N, 512]."""

    def __init__(self, params, config: IResNetConfig = IResNetConfig()):
        model = IResNet(config)
        self.params = params
        self._fn = jax.jit(lambda p, x: _normalise(model.apply({"params": p}, x)))

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(self.params, jnp.asarray(faces, jnp.float32)))


def _normalise(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class FaceIdentity:
    name = "cur"
    columns = ("cur",)

    def __init__(self, params, checkpoint: str, aligner: FaceAligner, frames: int = 32,
                 config: IResNetConfig = IResNetConfig()):
        self.embed = FaceEmbedder(params, config)
        self.aligner = aligner
        self.frames = frames
        self.backend = f"CurricularFace IR-101 in Flax ({checkpoint}); faces: {aligner.backend}"

    def __call__(self, sample, video) -> MetricResult:
        ref_face = self.aligner.align(load_image(sample.src_image))
        if ref_face is None:
            raise ValueError(f"no face found in the reference image {sample.src_image}")
        idx = evenly_spaced(video.num_frames, self.frames)
        faces = [self.aligner.align(video.frames[i]) for i in idx]
        found = [f for f in faces if f is not None]
        curve = [float("nan")] * len(faces)
        if not found:
            return MetricResult({"cur": 0.0}, {"face_similarity": curve}, {"frames_with_face": 0})
        batch = np.zeros((1 + len(faces), *ref_face.shape), np.float32)  # one shape per run: one compile
        batch[: 1 + len(found)] = np.stack([ref_face] + found)
        emb = self.embed(batch)[: 1 + len(found)]
        sims = np.maximum(0.0, emb[1:] @ emb[0])
        it = iter(sims.tolist())
        curve = [next(it) if f is not None else float("nan") for f in faces]
        return MetricResult({"cur": float(sims.mean())}, {"face_similarity": curve}, {"frames_with_face": len(found)})
