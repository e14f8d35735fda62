"""Raw video probing, scene cuts (PySceneDetect) and streaming clip extraction (PyAV).

Cuts come from PySceneDetect (`pip install scenedetect-headless`, the variant built on opencv-python-headless):
by default its `HistogramDetector`, which compares colour histograms of consecutive frames, so a hard cut is
found while motion inside a shot (which moves pixels but keeps the colours) is not mistaken for one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fc_jax.video import VideoError

DETECTORS = ("histogram", "content", "adaptive")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # as the container states it (0 when unknown)


def probe(path: str) -> VideoInfo:
    """Size, frame rate and frame count from the container, without decoding."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            s = container.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or 0.0)
            return VideoInfo(s.codec_context.width, s.codec_context.height, fps, int(s.frames or 0))
    except VideoError:
        raise
    except Exception as e:  # av.error.*
        raise VideoError(f"{path}: cannot be opened as a video ({type(e).__name__}: {e})") from e


def count_frames(path: str) -> int:
    """The number of decodable frames (for containers that do not state it)."""
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def detect_scenes(path: str, detector: str, threshold: float, min_scene_frames: int,
                  total_frames: int = 0) -> list[tuple[int, int]]:
    """Shots of `path` as [start, end) frame ranges, in order, covering the video (a video without cuts is one
    shot of `total_frames`, counted by decoding when 0)."""
    import scenedetect

    make = {"histogram": scenedetect.HistogramDetector, "content": scenedetect.ContentDetector,
            "adaptive": lambda threshold, min_scene_len: scenedetect.AdaptiveDetector(
                adaptive_threshold=threshold, min_scene_len=min_scene_len)}
    if detector not in make:
        raise ValueError(f"scene_detector must be one of {DETECTORS}, got {detector!r}")
    try:
        scenes = scenedetect.detect(path, make[detector](threshold=threshold, min_scene_len=min_scene_frames),
                                    backend="pyav")
    except Exception as e:  # the backends raise their own types for unreadable input
        raise VideoError(f"{path}: scene detection failed ({type(e).__name__}: {e})") from e
    if not scenes:  # PySceneDetect returns no list for a video without cuts
        return [(0, total_frames or count_frames(path))]
    return [(int(a.frame_num), int(b.frame_num)) for a, b in scenes]


def read_ranges(path: str, ranges: list[tuple[int, int]], resize=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Decode `path` once and keep the frames of each [start, end) range: (frames uint8 [n, h, w, 3] per range,
    passed through `resize` if given; the full-resolution first frame of each range)."""
    import av

    kept: list[list[np.ndarray]] = [[] for _ in ranges]
    firsts: list[np.ndarray | None] = [None] * len(ranges)
    last = max((end for _, end in ranges), default=0)
    try:
        with av.open(path) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index >= last:
                    break
                hits = [k for k, (a, b) in enumerate(ranges) if a <= index < b]
                if not hits:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                for k in hits:
                    if firsts[k] is None:
                        firsts[k] = rgb
                    kept[k].append(resize(rgb) if resize else rgb)
    except Exception as e:  # av.error.*
        raise VideoError(f"{path}: decoding failed ({type(e).__name__}: {e})") from e
    for k, (a, b) in enumerate(ranges):
        if len(kept[k]) != b - a:
            raise VideoError(f"{path}: frames [{a}, {b}) were asked for, {len(kept[k])} could be decoded")
    return [np.stack(f) for f in kept], firsts
