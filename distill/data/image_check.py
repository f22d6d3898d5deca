"""Reading image sizes and checking that image files decode, before any training.

Sizes are upright, as people (and annotation tools) see the images: the EXIF orientation is
applied, as ``dataset.load_image`` and inference (``distill.images``) apply it.

A header alone says nothing about the pixel data: a JPEG cut short by an interrupted copy has a
valid header and fails only when the image is decoded, i.e. during training. With ``decode`` the
whole file is decoded once: JPEGs at 1/8 scale (``Image.draft``: libjpeg still reads and
entropy-decodes all the data, so truncated or corrupt data is found, but skips most of the inverse
DCT and colour work), other formats in full. Files are checked in parallel threads (PIL decodes
without the GIL), and a file checked once in a process (same path, size and modification time) is
not decoded again, so the several data preparations of one `distill run` pay once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# (path, size in bytes, mtime in ns) of the files that decoded in this process
_DECODED: set[tuple[str, int, int]] = set()
MAX_THREADS = 8
ORIENTATION = 0x0112  # the EXIF orientation tag


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def upright_size(image: Any) -> tuple[int, int]:
    """``(width, height)`` of an open PIL image as a viewer shows it: an EXIF orientation of
    5..8 (a quarter turn) swaps the sides. Read from the header (no decoding)."""
    exif = image.getexif() if "exif" in image.info or image.format == "TIFF" else {}
    width, height = int(image.width), int(image.height)
    return (height, width) if exif.get(ORIENTATION) in (5, 6, 7, 8) else (width, height)


def image_size(path: str | Path, decode: bool = False) -> tuple[int, int]:
    """``(width, height)`` upright (``upright_size``) from the header; with ``decode`` the pixel
    data is decoded too.

    Raises ``OSError`` naming what PIL found (not an image, truncated, corrupt, too large).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        key = _file_key(path) if decode else None
        with Image.open(path) as im:
            size = upright_size(im)
            if key is not None and key not in _DECODED:
                im.draft(None, (max(1, im.width // 8), max(1, im.height // 8)))  # JPEG only
                im.load()
                _DECODED.add(key)
        return size
    except UnidentifiedImageError as exc:
        raise OSError(f"not an image PIL can read ({exc})") from exc
    except OSError as exc:
        if "truncated" in str(exc):
            raise OSError(f"the file is truncated ({exc})") from exc
        raise
    except Exception as exc:  # broken data: SyntaxError, ValueError, EOFError, too many pixels
        raise OSError(f"the pixel data does not decode ({type(exc).__name__}: {exc})") from exc


def check_images(
    paths: Sequence[str | Path], decode: bool = False
) -> list[tuple[int, int] | OSError]:
    """``image_size`` of each path, in order; an ``OSError`` in place of a failed one."""

    def one(path: str | Path) -> tuple[int, int] | OSError:
        try:
            return image_size(path, decode)
        except OSError as exc:
            return exc

    threads = min(MAX_THREADS, os.cpu_count() or 1, len(paths))
    if not decode or threads <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, paths))
