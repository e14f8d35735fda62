"""Uploaded person and garment images: checked, re-encoded as PNG into the server's own temporary folder under a
server-chosen id, at most `MAX_BYTES` each, the oldest dropped beyond `KEEP`."""

from __future__ import annotations

import collections
import io
import os
import secrets
import threading
import warnings

from PIL import Image

from fc_jax.inputs import check_image

MAX_BYTES = 8 * 1024 * 1024  # 8 MiB
MAX_PIXELS = 40_000_000
KEEP = 256
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


class UploadError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Uploads:
    def __init__(self, folder: str, max_bytes: int = MAX_BYTES, keep: int = KEEP):
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep
        self._paths: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, kind: str) -> str:
        """Check and store an upload; its id (`u` + random). UploadError saying what is wrong."""
        if len(data) > self.max_bytes:
            raise UploadError(f"upload too large: {len(data) / 2**20:.1f} MiB; the limit is "
                              f"{self.max_bytes / 2**20:.0f} MiB", 413)
        if not data:
            raise UploadError("empty upload: choose an image file (PNG, JPEG, WebP, BMP or GIF)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    if img.format not in FORMATS:
                        raise UploadError(f"unsupported image type {img.format}; use PNG, JPEG, WebP, BMP or GIF", 415)
                    if img.width * img.height > MAX_PIXELS:
                        raise UploadError(f"image too large: {img.width}x{img.height} pixels (at most "
                                          f"{MAX_PIXELS // 1_000_000} megapixels)", 413)
                    rgb = img.convert("RGB")
        except UploadError:
            raise
        except Exception as e:  # PIL raises several types for data that is not an image
            raise UploadError(f"not a readable image ({type(e).__name__}: {e}); upload a PNG, JPEG, WebP, BMP or "
                              "GIF file", 415) from e
        id = "u" + secrets.token_hex(8)
        path = os.path.join(self.folder, f"{id}.png")
        rgb.save(path, format="PNG")
        try:
            check_image(path)  # the same rules as generate's --reference / --garment (at least 32x32)
        except (OSError, ValueError) as e:
            os.remove(path)
            raise UploadError(str(e).replace(path, f"the {kind} image")) from e
        with self._lock:
            self._paths[id] = path
            while len(self._paths) > self.keep:
                _, old = self._paths.popitem(last=False)
                if os.path.exists(old):
                    os.remove(old)
        return id

    def path(self, id: str) -> str | None:
        with self._lock:
            return self._paths.get(id)
