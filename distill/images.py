"""Images for inference: found from a path, folder or glob, read as people see them, drawn on.

``read_image`` applies the EXIF orientation (``ImageOps.exif_transpose``), as image viewers do,
and turns every PIL mode into 8-bit RGB: grayscale is repeated over the channels, 16- and 32-bit
integer images are scaled by their bit depth (``>> 8`` for 16-bit, not clipped at 255), float
images by their range, and images with transparency are composited over white.
"""

from __future__ import annotations

import colorsys
import glob
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from distill.data.records import IMAGE_EXTENSIONS
from distill.errors import RecipeError

PathLike = str | os.PathLike


def find_images(source: PathLike) -> list[Path]:
    """The image files of ``source``: one file, the images of a folder (not its sub-folders,
    sorted) or the files a glob pattern matches (``**`` recurses). No image is an error."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    elif glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
    else:
        raise RecipeError(f"{text}: not found; expected an image file, a folder of images or a "
                          "glob pattern such as 'images/*.jpg'")
    if not files:
        raise RecipeError(f"{text}: no images found; expected files ending in "
                          f"{', '.join(IMAGE_EXTENSIONS)}")
    return files


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """``image`` upright (EXIF orientation applied) in 8-bit RGB, as a viewer shows it."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image).astype(np.float64)
        if mode == "F":
            low, high = float(np.nanmin(values, initial=0.0)), float(np.nanmax(values, initial=1.0))
            values = (values - low) / max(high - low, 1e-12) * 255.0
        else:  # 16-bit data (PNG opens as "I" or "I;16"); a wider range scales by its own depth
            bits = max(16, int(np.ceil(np.log2(max(float(values.max(initial=0)), 1.0) + 1))))
            values = values / (2 ** (bits - 8))
        gray = np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as uint8 ``[3, H, W]``."""
    array = np.asarray(pil_to_rgb(image))
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def read_image(path: PathLike) -> torch.Tensor:
    """The image file at ``path`` as uint8 RGB ``[3, H, W]``, upright; a clear error if the file
    is missing or cannot be decoded (including truncated data)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"image {path}: not found")
    try:
        with Image.open(path) as image:
            image.load()  # decodes every pixel: a truncated file fails here, not later
            return pil_to_tensor(image)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise RecipeError(f"image {path}: cannot be read as an image: {err}") from err


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class index (golden-ratio hues)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, labels: list[int],
                    texts: list[str]) -> torch.Tensor:
    """``image`` (uint8 ``[3, H, W]``) with the ``boxes`` (xyxy pixels) drawn, one colour per
    label, each captioned with its text."""
    from torchvision.utils import draw_bounding_boxes

    if len(boxes) == 0:
        return image.clone()
    width = max(1, round(max(image.shape[-2:]) / 320))
    colours = [class_colour(int(label)) for label in labels]
    return draw_bounding_boxes(image, boxes.float().cpu(), labels=texts, colors=colours,
                               width=width, fill_labels=True, label_colors="black")


def save_image(image: torch.Tensor, path: PathLike) -> Path:
    """Save uint8 ``[3, H, W]`` at ``path`` (format from the suffix) through a temporary file,
    so an interrupted run never leaves half an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
        picture.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
