"""Amp. (motion amplitude): OpenCV Farnebäck flow between consecutive frames (REFERENCE §7).

Reference procedure (OpenS2V-Eval `get_motionscore.py`), reproduced exactly: the flow maps of consecutive frames
(`fc_jax.optical_flow.flow_maps`: gray by `cv2.COLOR_BGR2GRAY` of the RGB frames, as the reference does, Farnebäck
flow, each map resized to width 16), the maps averaged over time, and the score is `|mean|` of that average over
both flow components: the **signed-mean** form (`amp`, the headline, as the paper's numbers come from it). Uniform
motion in opposite directions cancels in it, so the **magnitude** form the paper's prose describes is reported
beside it (`amp_magnitude`: mean over time and pixels of the length of the resized flow vectors).
"""

from __future__ import annotations

import numpy as np

from fc_jax.eval.metrics.base import MetricResult
from fc_jax.optical_flow import flow_maps


class MotionAmplitude:
    name = "amp"
    columns = ("amp", "amp_magnitude")

    def __init__(self):
        import cv2

        self.backend = f"OpenCV {cv2.__version__} Farnebäck (headline: signed-mean form; magnitude form beside it)"

    def __call__(self, sample, video) -> MetricResult:
        maps = flow_maps(video.frames)
        signed = float(abs(np.mean(np.mean(maps, axis=0))))
        lengths = np.linalg.norm(maps, axis=-1)  # [F-1, h, 16]
        return MetricResult(
            values={"amp": signed, "amp_magnitude": float(lengths.mean())},
            per_frame={"flow_signed_mean": maps.mean(axis=(1, 2, 3)).tolist(),
                       "flow_magnitude": lengths.mean(axis=(1, 2)).tolist()},
        )
