"""How many video frames the streaming student makes, and before which chunk a garment switch runs.

A chunk is `chunk_frames` latent frames (3). The VAE decodes the stream's first latent frame to one video frame and
every later one to 4, so the first chunk gives 4·chunk_frames − 3 frames (9) and every later chunk 4·chunk_frames
(12): a video has N = 12k − 3 frames (9, 21, 33, ..., 81, ...), and chunk c starts at frame 0 (c = 0) or 12c − 3.

Plain integer arithmetic (no jax, nothing the size of the video), so a command line checks `--frames` and
`--switch` before it builds anything, and any length is fine.
"""

from __future__ import annotations

from typing import Mapping


def chunk_count(num_frames: int, chunk_frames: int = 3) -> int:
    """The chunks of an N-frame video; ValueError stating the rule, N and the nearest valid lengths otherwise."""
    per_chunk = 4 * chunk_frames
    first = per_chunk - 3
    if num_frames < first or (num_frames + 3) % per_chunk:
        below = (num_frames + 3) // per_chunk * per_chunk - 3
        nearest = [n for n in (below, below + per_chunk) if n >= first]
        raise ValueError(
            f"the number of frames must be {per_chunk}k - 3 ({first}, {first + per_chunk}, {first + 2 * per_chunk}, "
            f"...: the first chunk makes {first} frames, every later one {per_chunk}); got {num_frames}; "
            f"the nearest are {' and '.join(map(str, nearest))}")
    return (num_frames + 3) // per_chunk


def chunk_start(chunk: int, chunk_frames: int = 3) -> int:
    """The first video frame of chunk `chunk` (0, 9, 21, 33, ... for 3-frame chunks)."""
    return 0 if chunk == 0 else 4 * chunk_frames * chunk - 3


def switch_chunks(switch_frames: Mapping[int, object], num_frames: int, chunk_frames: int = 3) -> dict[int, object]:
    """{chunk: image}: each requested switch frame mapped to the chunk before which the switch runs, the first
    chunk boundary at or after the frame, so the new garment never appears before the frame asked for."""
    chunks = chunk_count(num_frames, chunk_frames)
    out = {}
    for frame, image in sorted(switch_frames.items()):
        if not 0 < frame < num_frames:
            raise ValueError(f"switch frame {frame} is outside the video (frames 1..{num_frames - 1})")
        chunk = max(1, -(-(frame + 3) // (4 * chunk_frames)))  # the first c >= 1 with chunk_start(c) >= frame
        if chunk >= chunks:
            raise ValueError(
                f"switch frame {frame} falls in the last chunk (starting at frame "
                f"{chunk_start(chunks - 1, chunk_frames)}); no chunk is left to show it in a {num_frames}-frame video"
            )
        if chunk in out:
            raise ValueError(f"two switches fall before the same chunk (starting at frame "
                             f"{chunk_start(chunk, chunk_frames)})")
        out[chunk] = image
    return out
