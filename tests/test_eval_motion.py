"""Amp.: Farnebäck amplitude on synthetic videos with known motion, and exact agreement with a direct OpenCV run
of the reference procedure."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from fc_jax.eval.metrics.motion import MotionAmplitude  # noqa: E402
from fc_jax.optical_flow import flow_maps  # noqa: E402
from fc_jax.video import Video, VideoError  # noqa: E402


def _texture(h=96, w=160, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w + 64, 3), dtype=np.uint8), (9, 9), 2.5)


def _translating(k: int, frames: int = 6) -> np.ndarray:
    """A textured pattern moving right by k px per frame (k < 0: left); a 160-px window of a wider texture."""
    tex = _texture()
    return np.stack([tex[:, 32 - k * t : 32 - k * t + 160] for t in range(frames)])


def _amp(frames):
    return MotionAmplitude()(None, Video("synthetic", frames, 24.0))


def test_sign_and_ordering():
    static, slow, fast = _amp(_translating(0)), _amp(_translating(1)), _amp(_translating(3))
    assert static.values["amp"] < 1e-3 and static.values["amp_magnitude"] < 1e-2
    assert static.values["amp"] < slow.values["amp"] < fast.values["amp"]
    # Horizontal flow is about +k (right; borders pull it a little low), vertical 0; the signed mean averages
    # both components: about k / 2.
    right, left = flow_maps(_translating(3)), flow_maps(_translating(-3))
    assert right[..., 0].mean() == pytest.approx(3, abs=0.6) and abs(right[..., 1].mean()) < 0.1
    assert left[..., 0].mean() == pytest.approx(-3, abs=0.6)
    assert fast.values["amp"] == pytest.approx(1.5, abs=0.35)
    assert fast.values["amp_magnitude"] == pytest.approx(3, abs=0.6)
    assert len(fast.per_frame["flow_signed_mean"]) == 5


def test_magnitude_form_does_not_cancel():
    """Top half moving right, bottom half left: the signed mean cancels, the magnitude form does not."""
    right, left = _translating(2), _translating(-2)
    frames = np.concatenate([right[:, :48], left[:, 48:]], axis=1)
    r = _amp(frames)
    assert r.values["amp"] < 0.2 and r.values["amp_magnitude"] > 1.5


def test_matches_direct_opencv_exactly():
    frames = _translating(2, frames=5)
    prev = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)  # the reference converts RGB frames with BGR2GRAY
    maps = []
    for frame in frames[1:]:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        flow = cv2.calcOpticalFlowFarneback(prev, gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        maps.append(cv2.resize(flow, (16, int(flow.shape[0] * (16 / flow.shape[1]))), interpolation=cv2.INTER_AREA))
        prev = gray
    expected = abs(np.mean(np.mean(np.array(maps), axis=0)))
    assert _amp(frames).values["amp"] == float(expected)
    assert flow_maps(frames).shape == (4, 9, 16, 2)  # 96 x 160 -> width 16, height int(96 * 16 / 160)


def test_single_frame_is_an_error():
    with pytest.raises(VideoError, match="at least 2 frames, the video has 1"):
        _amp(_translating(1, frames=1))
