"""Largest-face detection and 5-point alignment, offline (REFERENCE §7, Cur).

Detector: dlib's HOG frontal face detector (built into dlib) and its 68-point shape predictor
(`shape_predictor_68_face_landmarks.dat`, shipped by the `face_recognition_models` package, or any path given).
The five points insightface aligns with are taken from the 68: the two eye centres (mean of each eye's six points),
the nose tip (30) and the mouth corners (48, 54).

Alignment reproduces insightface `face_align.norm_crop(img, kps, 224)` as the reference scripts call it: a
similarity transform (Umeyama, no reflection) of the five points onto the ArcFace template scaled x2, `warpAffine`
to 224 x 224 with black borders; then the crop is resized to 112 (bilinear) and scaled to [-1, 1].
When no face is found the image is padded by 25% on every side with gray (128) and searched again, as the
reference does.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np

# insightface `arcface_dst`, the five landmarks of a 112 x 112 aligned face: eyes, nose tip, mouth corners.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float64
)
CROP_SIZE = 224
EMBED_SIZE = 112


def default_landmark_model() -> str | None:
    """`shape_predictor_68_face_landmarks.dat` from the installed `face_recognition_models` package, if any."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "shape_predictor_68_face_landmarks.dat")
    return path if os.path.isfile(path) else None


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) taking points src [N, 2] onto
    dst [N, 2]: the 2 x 3 affine matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


@dataclasses.dataclass
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom
    score: float
    landmarks: np.ndarray  # [5, 2] float (x, y): eyes, nose tip, mouth corners


class FaceAligner:
    """uint8 RGB image [H, W, 3] -> the largest face's aligned crop [112, 112, 3] in [-1, 1], or None."""

    def __init__(self, landmark_model: str | None = None, upsample: int = 1, min_score: float = 0.3):
        import dlib

        landmark_model = landmark_model or default_landmark_model()
        if not landmark_model or not os.path.isfile(landmark_model):
            raise FileNotFoundError(
                "no dlib 68-point landmark model: pip install face_recognition_models, or pass its path "
                f"(shape_predictor_68_face_landmarks.dat); looked for {landmark_model!r}")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(landmark_model)
        self._dlib = dlib
        self.upsample, self.min_score = upsample, min_score
        self.backend = f"dlib {dlib.__version__} HOG detector + 68-point landmarks ({os.path.basename(landmark_model)})"

    def detect(self, image: np.ndarray) -> Face | None:
        """The largest face scoring at least `min_score`, with its five landmarks; gray-padded retry if none."""
        face = self._largest(image)
        if face is None:
            pad_h, pad_w = int(image.shape[0] * 0.25), int(image.shape[1] * 0.25)
            padded = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)), constant_values=128)
            face = self._largest(padded)
            if face is not None:
                face.landmarks -= np.array([pad_w, pad_h], np.float64)
        return face

    def _largest(self, image: np.ndarray) -> Face | None:
        boxes, scores, _ = self._detector.run(np.ascontiguousarray(image), self.upsample, 0.0)
        found = [(b, s) for b, s in zip(boxes, scores) if s >= self.min_score]
        if not found:
            return None
        box, score = max(found, key=lambda bs: bs[0].width() * bs[0].height())
        shape = self._predictor(np.ascontiguousarray(image), box)
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        five = np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
        return Face((box.left(), box.top(), box.right(), box.bottom()), float(score), five)

    def align(self, image: np.ndarray) -> np.ndarray | None:
        face = self.detect(image)
        return None if face is None else align_face(image, face.landmarks)


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """norm_crop to 224 by the five landmarks, resize to 112, scale to [-1, 1]: float32 [112, 112, 3]."""
    import cv2

    matrix = umeyama(np.asarray(landmarks, np.float64), ARCFACE_TEMPLATE * (CROP_SIZE / 112.0))
    crop = cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), borderValue=0.0)
    crop = cv2.resize(crop, (EMBED_SIZE, EMBED_SIZE))
    return (crop.astype(np.float32) / 255.0 - 0.5) / 0.5
