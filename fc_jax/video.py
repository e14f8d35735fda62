"""Writing mp4 files chunk by chunk with PyAV (FFmpeg bundled in its wheel; H.264, yuv420p)."""

from __future__ import annotations

import os

import numpy as np


class Mp4Writer:
    """Append uint8 frames [N, H, W, 3] as they are made; `close()` (or the context manager) finishes the file.

    Writes to `path + ".partial"` and renames on a clean close, so an interrupted run never leaves a truncated
    file under the final name.
    """

    def __init__(self, path: str, fps: int = 24, crf: int = 18):
        import av

        self.path = path
        self._tmp = path + ".partial"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._container = av.open(self._tmp, mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf)}
        self._size = None
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        import av

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames [N, H, W, 3]; got {frames.dtype} {frames.shape}")
        if self._size is None:
            h, w = frames.shape[1:3]
            if h % 2 or w % 2:
                raise ValueError(f"H.264 yuv420p needs even frame sizes; got {h}x{w}")
            self._stream.height, self._stream.width = h, w
            self._size = (h, w)
        elif frames.shape[1:3] != self._size:
            raise ValueError(f"frame size changed from {self._size} to {frames.shape[1:3]}")
        for frame in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self._container.mux(packet)
        self.frames_written += len(frames)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._container.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_mp4(path: str) -> np.ndarray:
    """All frames of a video file as uint8 [N, H, W, 3]."""
    import av

    if not os.path.isfile(path):
        raise FileNotFoundError(f"video not found: {path}")
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
