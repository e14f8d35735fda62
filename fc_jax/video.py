"""Video files <-> uint8 frames [F, H, W, 3] RGB through PyAV (FFmpeg's libraries in-process, bundled in the
wheel: exact frame counts, real decode errors). Writing is H.264 yuv420p (or lossless RGB), chunk by chunk.
`evenly_spaced` picks the frames that metrics and curation look at."""

from __future__ import annotations

import dataclasses
import os

import numpy as np


class VideoError(ValueError):
    """A video that cannot be read, or has too few frames for what is asked of it."""


@dataclasses.dataclass
class Video:
    path: str
    frames: np.ndarray  # [F, H, W, 3] uint8
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def read_video(path: str) -> Video:
    """Decode every frame of `path` to RGB. Raises VideoError naming the file if it is missing or undecodable."""
    import av

    if not os.path.isfile(path):
        raise VideoError(f"video not found: {path}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except VideoError:
        raise
    except Exception as e:  # av.error.* and container-level failures
        raise VideoError(f"{path}: cannot be decoded as a video ({type(e).__name__}: {e})") from e
    if not frames:
        raise VideoError(f"{path}: the video stream holds no frames")
    return Video(path, np.stack(frames), fps)


def evenly_spaced(num_frames: int, count: int) -> np.ndarray:
    """`count` frame indices spread over `[0, num_frames)` (np.linspace, truncated, as the reference scripts do)."""
    if num_frames < count:
        raise VideoError(f"need at least {count} frames, the video has {num_frames}")
    return np.linspace(0, num_frames - 1, count).astype(int)


class Mp4Writer:
    """Append uint8 frames [N, H, W, 3] as they are made; `close()` (or the context manager) finishes the file.

    Writes to `path + ".partial"` and renames on a clean close, so an interrupted run never leaves a truncated
    file under the final name. When the `with` block fails (an exception, Ctrl-C): with `keep_partial` and frames
    written, the video so far is finished properly (a playable mp4) as `partial_path` (`video.partial.mp4` for
    `video.mp4`) and `kept` names it; otherwise the partial file is removed.
    """

    def __init__(self, path: str, fps: int = 24, crf: int = 18, keep_partial: bool = False, lossless: bool = False):
        import av

        self.path = path
        root, ext = os.path.splitext(path)
        self.partial_path = root + ".partial" + ext
        self.keep_partial = keep_partial
        self.kept: str | None = None
        self._tmp = path + ".partial"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._container = av.open(self._tmp, mode="w", format="mp4")
        self.lossless = lossless
        if lossless:  # RGB H.264 at qp 0: decodes to the exact pixels (4:2:0 mixes colours across every edge)
            self._stream = self._container.add_stream("libx264rgb", rate=fps)
            self._stream.pix_fmt, self._stream.options = "rgb24", {"qp": "0"}
        else:
            self._stream = self._container.add_stream("libx264", rate=fps)
            self._stream.pix_fmt, self._stream.options = "yuv420p", {"crf": str(crf)}
        self._size = None
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        import av

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames [N, H, W, 3]; got {frames.dtype} {frames.shape}")
        if self._size is None:
            h, w = frames.shape[1:3]
            if not self.lossless and (h % 2 or w % 2):
                raise ValueError(f"H.264 yuv420p needs even frame sizes; got {h}x{w}")
            self._stream.height, self._stream.width = h, w
            self._size = (h, w)
        elif frames.shape[1:3] != self._size:
            raise ValueError(f"frame size changed from {self._size} to {frames.shape[1:3]}")
        for frame in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self._container.mux(packet)
        self.frames_written += len(frames)

    def _finish(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def close(self) -> None:
        self._finish()
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
        elif self.keep_partial and self.frames_written:
            self._finish()
            os.replace(self._tmp, self.partial_path)
            self.kept = self.partial_path
        else:
            self.abort()


def write_video(path: str, frames: np.ndarray, fps: int = 24, crf: int = 17, lossless: bool = False) -> None:
    """Encode uint8 frames [F, H, W, 3] as one H.264 mp4 (yuv420p, H and W even; `lossless`: RGB at qp 0, the exact
    pixels, what the tiny world's palette metrics need)."""
    with Mp4Writer(path, fps=fps, crf=crf, lossless=lossless) as writer:
        writer.write(frames)
