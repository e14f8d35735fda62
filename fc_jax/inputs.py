"""Checks of a command's input files and output paths, made before anything slow starts (no jax here).

Each raises FileNotFoundError or ValueError with a message naming the path, what was expected and what was found.
"""

from __future__ import annotations

import os
import tempfile

from fc_jax import images

# Smaller images hold too little of a person or a garment to condition on (they are resized to the video size).
MIN_IMAGE_SIDE = 32


def check_image(path: str) -> tuple[int, int]:
    """(width, height) of the image file at `path`, checked to be readable and at least MIN_IMAGE_SIDE pixels on
    each side."""
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; expected an image file (PNG, JPEG, ...)")
    width, height = images.load_image(path).size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(f"{path} is {width}x{height} pixels; an image must be at least {MIN_IMAGE_SIDE}x"
                         f"{MIN_IMAGE_SIDE} (it is resized to the video size); give a larger one")
    return width, height


def check_writable(path: str) -> None:
    """Check that a file can be created at `path` (its folders may be missing: they are created when it is
    written), by creating and removing a probe file in the nearest existing folder; nothing is left behind."""
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; expected a file name in it (e.g. {os.path.join(path, 'video.mp4')})")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".fc_jax_write_test_")
        os.close(handle)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"cannot write {path}: files cannot be created in {folder} ({e.strerror}); choose "
                         "another output path") from e
