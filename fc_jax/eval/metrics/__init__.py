"""The HGC-Bench metrics and how they are set up from `EvalOptions`.

`build_metrics` returns, for every metric asked for, either a ready metric or an `Unavailable` saying why it
cannot run here (weights not given, package missing, no VLM server configured): those are reported as "not
computed" with the reason, never as a number.
"""

from __future__ import annotations

import dataclasses
import os

from fc_jax.eval.metrics.base import Metric, MetricResult, Unavailable

ALL_METRICS = ("amp", "vq", "cur", "aesthetic", "gme", "smoo", "judge")
COLUMNS = {"amp": ("amp", "amp_magnitude"), "vq": ("vq",), "cur": ("cur",), "aesthetic": ("aesthetic",),
           "gme": ("gme",), "smoo": ("smoo",), "judge": ("hgc", "lgc", "ntp")}


@dataclasses.dataclass
class EvalOptions:
    """Where the weights and the VLM server are. Unset VLM fields fall back to the environment:
    FC_EVAL_VLM_URL / OPENAI_BASE_URL, FC_EVAL_VLM_KEY / OPENAI_API_KEY, FC_EVAL_JUDGE_MODEL, FC_EVAL_GME_MODEL,
    FC_EVAL_QALIGN_MODEL."""

    metrics: tuple[str, ...] = ALL_METRICS
    musiq_checkpoint: str | None = None  # official spaq_ckpt.npz
    face_checkpoint: str | None = None  # glint360k_curricular_face_r101_backbone.bin
    face_landmarks: str | None = None  # dlib shape_predictor_68_face_landmarks.dat (default: face_recognition_models)
    clip: str | None = None  # transformers CLIP ViT-L/14 folder
    aesthetic_head: str | None = None  # sac+logos+ava1-l14-linearMSE.pth
    vlm_url: str | None = None
    vlm_key: str | None = None
    judge_model: str | None = None
    gme_model: str | None = None
    qalign_model: str | None = None
    vlm_concurrency: int = 4
    vlm_timeout: float = 120.0
    vlm_cache: str | None = None
    judge_frames: int = 8
    face_frames: int = 32
    gme_frames: int = 32
    vq_frames: int = 0  # 0 = every frame


def build_metrics(opts: EvalOptions) -> list[Metric | Unavailable]:
    unknown = [m for m in opts.metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
    client, client_reason = _vlm_client(opts)
    built = []
    for name in opts.metrics:
        try:
            built.append(_BUILDERS[name](opts, client, client_reason))
        except (ImportError, FileNotFoundError, OSError, ValueError) as e:
            built.append(Unavailable(name, COLUMNS[name], f"{type(e).__name__}: {e}"))
    return built


def _missing(name: str, what: str) -> Unavailable:
    return Unavailable(name, COLUMNS[name], what)


def _amp(opts, client, reason):
    from fc_jax.eval.metrics.motion import MotionAmplitude

    return MotionAmplitude()


def _vq(opts, client, reason):
    if not opts.musiq_checkpoint:
        return _missing("vq", "no MUSIQ checkpoint (--musiq_checkpoint=spaq_ckpt.npz)")
    from fc_jax.convert.musiq import convert_checkpoint
    from fc_jax.eval.metrics.quality import VideoQuality

    return VideoQuality(convert_checkpoint(opts.musiq_checkpoint), os.path.basename(opts.musiq_checkpoint),
                        frames=opts.vq_frames)


def _cur(opts, client, reason):
    if not opts.face_checkpoint:
        return _missing("cur", "no CurricularFace checkpoint (--face_checkpoint=glint360k_curricular_face_r101_backbone.bin)")
    from fc_jax.convert.iresnet import convert_checkpoint
    from fc_jax.eval.faces import FaceAligner
    from fc_jax.eval.metrics.identity import FaceIdentity

    return FaceIdentity(convert_checkpoint(opts.face_checkpoint), os.path.basename(opts.face_checkpoint),
                        FaceAligner(opts.face_landmarks), frames=opts.face_frames)


def _aesthetic(opts, client, reason):
    if not (opts.clip and opts.aesthetic_head):
        return _missing("aesthetic", "needs --clip=<transformers CLIP ViT-L/14 folder> and "
                                     "--aesthetic_head=sac+logos+ava1-l14-linearMSE.pth")
    from fc_jax.convert.reward import load_reward_params
    from fc_jax.eval.metrics.aesthetic import Aesthetic

    params, config = load_reward_params(opts.clip, opts.aesthetic_head)
    return Aesthetic(params, config, os.path.basename(opts.clip.rstrip("/")))


def _vlm_metric(name, model_field, env, cls_name):
    def build(opts, client, reason):
        model = getattr(opts, model_field) or os.environ.get(env)
        if client is None:
            return _missing(name, reason)
        if not model:
            return _missing(name, f"no model name (--{model_field} or ${env})")
        from fc_jax.eval.metrics import vlm_metrics

        cls = getattr(vlm_metrics, cls_name)
        frames = {"judge": opts.judge_frames, "gme": opts.gme_frames}.get(name)
        return cls(client, model, frames) if frames else cls(client, model)

    return build


def _vlm_client(opts):
    from fc_jax.vlm import VLMClient, VLMConfig

    config = VLMConfig.from_env(base_url=opts.vlm_url, api_key=opts.vlm_key, timeout=opts.vlm_timeout,
                                concurrency=opts.vlm_concurrency, cache_dir=opts.vlm_cache)
    if config is None:
        return None, "no VLM server (--vlm_url or $FC_EVAL_VLM_URL: an OpenAI-compatible endpoint)"
    return VLMClient(config), None


_BUILDERS = {
    "amp": _amp,
    "vq": _vq,
    "cur": _cur,
    "aesthetic": _aesthetic,
    "gme": _vlm_metric("gme", "gme_model", "FC_EVAL_GME_MODEL", "GMEScore"),
    "smoo": _vlm_metric("smoo", "qalign_model", "FC_EVAL_QALIGN_MODEL", "Smoothness"),
    "judge": _vlm_metric("judge", "judge_model", "FC_EVAL_JUDGE_MODEL", "Judge"),
}

__all__ = ["ALL_METRICS", "COLUMNS", "EvalOptions", "Metric", "MetricResult", "Unavailable", "build_metrics"]
