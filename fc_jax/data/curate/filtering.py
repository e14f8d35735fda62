"""Stage 1: coarse-to-fine video filtering. Cheap checks first, expensive ones only on survivors:

1. container metadata (no decoding): short side >= `min_height`, `min_fps` <= fps <= `max_fps`;
2. scene cuts (PySceneDetect, `scenes.py`); shots shorter than `min_seconds` or than the training clip
   (`dataset.num_frames`) are dropped; a window of `num_frames` frames is taken from the middle of each survivor
   and cover-cropped to the training geometry;
3. motion: mean Farnebäck flow length (`fc_jax.optical_flow.flow_maps`) over evenly spread consecutive
   pairs, as a fraction of the frame width, in [`min_motion`, `max_motion`];
4. exactly one person: dlib's HOG frontal face detector finds exactly one face (score >= `face_min_score`) in
   every one of `person_frames` evenly spread frames (no person detector with offline weights ships in a wheel
   usable here; for the frontal-facing fashion footage this is trained on, one face = one person);
5. aesthetics (CLIP ViT-L/14 + LAION head) >= `min_aesthetic` and quality (MUSIQ) >= `min_musiq`, scored per frame
   as the evaluation does (`fc_jax.frame_scores`), each only when its weights are configured; otherwise the
   clip's outputs say "not configured". The MUSIQ architecture is the official multi-scale one, with the
   `MusiqConfig` fields of the JSON object `musiq_model` changed (e.g. `{"num_classes": 10}` for the AVA
   checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np
from PIL import Image

from fc_jax.data.curate.scenes import detect_scenes, probe, read_ranges
from fc_jax.images import cover_crop
from fc_jax.optical_flow import flow_maps
from fc_jax.video import Video, evenly_spaced, write_video

NOT_CONFIGURED = "not configured"


def video_id(path: str) -> str:
    """A stable id for a raw video: its file stem and a hash of its absolute path."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}"


def shrink(frames: np.ndarray, width: int) -> np.ndarray:
    """uint8 [F, H, W, 3] resized (area) to `width` wide, aspect kept; unchanged if not wider."""
    import cv2

    h, w = frames.shape[1:3]
    if w <= width:
        return frames
    size = (width, max(1, round(h * width / w)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def motion_level(frames: np.ndarray, pairs: int) -> float:
    """Mean Farnebäck flow length per frame over `pairs` evenly spread consecutive pairs, / frame width."""
    starts = np.unique(evenly_spaced(frames.shape[0] - 1, min(pairs, frames.shape[0] - 1)))
    maps = np.concatenate([flow_maps(frames[i : i + 2]) for i in starts])
    return float(np.linalg.norm(maps, axis=-1).mean() / frames.shape[2])


class FaceCounter:
    """uint8 RGB image -> the number of faces dlib's HOG frontal detector finds with score >= `min_score`."""

    def __init__(self, min_score: float = 0.5, upsample: int = 1):
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.min_score, self.upsample = min_score, upsample

    def __call__(self, image: np.ndarray) -> int:
        _, scores, _ = self._detector.run(np.ascontiguousarray(image), self.upsample, 0.0)
        return sum(s >= self.min_score for s in scores)


def musiq_config(overrides: str):
    """The official MUSIQ `MusiqConfig` with the fields of the JSON object `overrides` (empty: none) changed."""
    from fc_jax.models.musiq import MusiqConfig

    try:
        changes = json.loads(overrides.strip() or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"filter.musiq_model is not JSON ({e}): {overrides!r}") from e
    names = [f.name for f in dataclasses.fields(MusiqConfig)]
    if not isinstance(changes, dict) or set(changes) - set(names):
        raise ValueError(f"filter.musiq_model must be a JSON object with fields among {names}; got {overrides!r}")
    return MusiqConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})


class Scorers:
    """The optional learned filters, loaded once from the config: `aesthetic(video)` and `quality(video)` (MOS)
    are None when their weights are not configured."""

    def __init__(self, cfg):
        self.aesthetic = self.quality = None
        if cfg.aesthetic_clip and cfg.aesthetic_head:
            from fc_jax.convert.reward import load_reward_params
            from fc_jax.frame_scores import AestheticFrames

            params, clip_config = load_reward_params(cfg.aesthetic_clip, cfg.aesthetic_head)
            self.aesthetic = _mean(AestheticFrames(params, clip_config, frames=cfg.aesthetic_frames))
        if cfg.musiq_checkpoint:
            from fc_jax.convert.musiq import convert_checkpoint
            from fc_jax.frame_scores import MusiqFrames

            config = musiq_config(cfg.musiq_model)
            self.quality = _mean(MusiqFrames(convert_checkpoint(cfg.musiq_checkpoint, config), config,
                                             frames=cfg.musiq_frames))


def _mean(scores):
    """video -> the mean over its scored frames of `scores` (the per-frame scorer the evaluation metric uses)."""
    return lambda video: float(np.mean(scores(video.frames)))


def check_clip(frames: np.ndarray, fps: float, cfg, faces: FaceCounter, scorers: Scorers) -> tuple[dict, str]:
    """Fine checks of one clip (uint8 [F, H, W, 3] at the training geometry): (measurements, rejection reason or
    "")."""
    small = shrink(frames, cfg.analysis_width)
    out: dict = {}
    out["motion"] = motion = motion_level(small, cfg.motion_pairs)
    if not cfg.min_motion <= motion <= cfg.max_motion:
        side = "too little" if motion < cfg.min_motion else "too much"
        return out, f"motion: {side} ({motion:.4f} of the width per frame; allowed [{cfg.min_motion}, {cfg.max_motion}])"
    out["faces"] = counts = [faces(small[i]) for i in evenly_spaced(len(small), min(cfg.person_frames, len(small)))]
    if any(c != 1 for c in counts):
        return out, f"person: exactly one face wanted in each sampled frame, found {counts}"
    video = Video("", frames, fps)
    for name, scorer, least in (("aesthetic", scorers.aesthetic, cfg.min_aesthetic),
                                ("musiq", scorers.quality, cfg.min_musiq)):
        if scorer is None:
            out[name] = NOT_CONFIGURED
            continue
        out[name] = score = float(scorer(video))
        if score < least:
            return out, f"{name}: {score:.3f} < {least}"
    return out, ""


def filter_video(path: str, work_dir: str, cfg, geometry, faces: FaceCounter, scorers: Scorers):
    """Stage 1 for one raw video: (status, outputs, reason, new clip items with their own filter rows).

    Accepted clips are written to `<work_dir>/clips/<clip id>.mp4` (training geometry) with their first frame,
    cropped to the training aspect ratio at full resolution, as `<work_dir>/images/<clip id>_frame.png`."""
    vid = video_id(path)
    info = probe(path)
    short = min(info.width, info.height)
    if short < cfg.min_height:
        return "rejected", {"info": vars(info)}, f"resolution: short side {short} < {cfg.min_height}", []
    if not cfg.min_fps <= info.fps <= cfg.max_fps:
        return "rejected", {"info": vars(info)}, f"fps: {info.fps:.2f} outside [{cfg.min_fps}, {cfg.max_fps}]", []
    scenes = detect_scenes(path, cfg.scene_detector, cfg.scene_threshold, cfg.min_scene_frames, info.frames)
    need = max(geometry.num_frames, int(np.ceil(cfg.min_seconds * info.fps)))
    windows, clips = [], []
    for k, (a, b) in enumerate(scenes):
        clip_id = f"{vid}/s{k:03d}"
        if b - a < need:
            clips.append((clip_id, (a, b), f"duration: {b - a} frames < {need}"))
        elif len(windows) >= cfg.max_clips_per_video:
            clips.append((clip_id, (a, b), f"max_clips_per_video ({cfg.max_clips_per_video}) reached"))
        else:
            start = a + (b - a - geometry.num_frames) // 2
            windows.append((start, start + geometry.num_frames))
            clips.append((clip_id, windows[-1], ""))
    outputs = {"info": vars(info), "scenes": scenes}
    if not windows:
        return "rejected", outputs, f"duration: no shot of at least {need} frames among {len(scenes)}", \
            _clip_rows(path, vid, info, [(c, w, r, {}) for c, w, r in clips])
    aspect = lambda im: np.asarray(cover_crop(Image.fromarray(im), *_aspect_box(im.shape, geometry), "training"))
    to_geometry = lambda im: np.asarray(cover_crop(Image.fromarray(im), geometry.height, geometry.width, "training"))
    frames, firsts = read_ranges(path, windows, resize=to_geometry)
    results = iter(zip(frames, firsts))
    rows = []
    for clip_id, window, reason in clips:
        measured: dict = {}
        if not reason:
            clip, first = next(results)
            started = time.time()
            measured, reason = check_clip(clip, info.fps, cfg, faces, scorers)
            measured["seconds"] = time.time() - started
            if not reason:
                measured["clip"] = _save_clip(work_dir, clip_id, clip, aspect(first), info.fps)
        rows.append((clip_id, window, reason, measured))
    return "done", outputs, "", _clip_rows(path, vid, info, rows)


def _aspect_box(shape, geometry) -> tuple[int, int]:
    """The largest (height, width) with the training aspect ratio inside an image of `shape`."""
    h, w = shape[:2]
    scale = min(h / geometry.height, w / geometry.width)
    return max(1, int(geometry.height * scale)), max(1, int(geometry.width * scale))


def _save_clip(work_dir: str, clip_id: str, clip: np.ndarray, first: np.ndarray, fps: float) -> dict:
    base = clip_id.replace("/", "__")
    paths = {"video": os.path.join(work_dir, "clips", base + ".mp4"),
             "frame": os.path.join(work_dir, "images", base + "_frame.png")}
    os.makedirs(os.path.dirname(paths["frame"]), exist_ok=True)
    write_video(paths["video"], clip, fps=max(1, round(fps)))
    Image.fromarray(first).save(paths["frame"])
    return paths


def _clip_rows(path: str, vid: str, info, rows) -> list:
    """Clip items for the manifest, each with its stage-1 verdict: (id, info, status, measurements, reason)."""
    return [(clip_id, {"video": path, "parent": vid, "frames": list(window), "fps": info.fps},
             "rejected" if reason else "done", measured, reason) for clip_id, window, reason, measured in rows]

