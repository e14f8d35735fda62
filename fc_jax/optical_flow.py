"""Dense optical flow of consecutive frames, as OpenS2V-Eval's `get_motionscore.py` computes it; shared by the
motion amplitude metric (`fc_jax.eval.metrics.motion`) and the curation's motion filter
(`fc_jax.data.curate.filtering`).

Reproduced exactly: every frame is turned to gray with `cv2.COLOR_BGR2GRAY` although the frames are RGB (the
reference does this; it swaps the R and B weights), flow by `calcOpticalFlowFarneback(prev, next, None, 0.5, 3,
15, 3, 5, 1.2, 0)`, and each flow map resized to width 16 (height `int(h * 16 / w)`, INTER_AREA).
"""

from __future__ import annotations

import numpy as np

from fc_jax.video import VideoError

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
DOWNSCALE_WIDTH = 16


def flow_maps(frames: np.ndarray) -> np.ndarray:
    """Farnebäck flow of consecutive frames, resized to width 16: uint8 [F, H, W, 3] -> float32 [F-1, h, 16, 2]."""
    import cv2

    if frames.shape[0] < 2:
        raise VideoError(f"motion amplitude needs at least 2 frames, the video has {frames.shape[0]}")
    h, w = frames.shape[1:3]
    size = (DOWNSCALE_WIDTH, int(h * (DOWNSCALE_WIDTH / w)))
    prev = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    maps = []
    for frame in frames[1:]:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        flow = cv2.calcOpticalFlowFarneback(prev, gray, None, **FARNEBACK)
        maps.append(cv2.resize(flow, size, interpolation=cv2.INTER_AREA))
        prev = gray
    return np.stack(maps)
