"""Image files as a model sees them: found under a folder, decoded to RGB uint8, turned upright, and brought to one
square size. The image-folder data set (:mod:`mpl_runner.data.image_folder`), its decoded cache and ``mpl-predict``
all read files through :func:`read_image`, so a trained model sees the same pixels in every one of them.

Pillow decodes every format it knows (JPEG, PNG with 8 or 16 bits, WebP, BMP, TIFF, GIF; greyscale, RGBA, CMYK,
palette): alpha is dropped, as torchvision's ``ImageReadMode.RGB`` does; 16-bit channels keep their top 8 bits;
the EXIF orientation is applied. A JPEG much larger than the target is decoded at a reduced scale (Pillow's
``draft``: libjpeg's DCT scaling, the output still at least the target size), which is most of the speed.

``resize`` (``dataset.resize``): ``crop`` scales the shorter side to ``size`` and cuts the centre square;
``stretch`` scales both sides to ``size``; ``pad`` scales the longer side to ``size`` and pads with grey 128.
An image that is already ``size`` x ``size`` keeps its pixels exactly.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

RESIZE = ("crop", "stretch", "pad")
FILL = 128  # the grey of the padding (the official augmentation's fill too)


class UnreadableImage(Exception):
    """A file that is not an image Pillow can decode (or is truncated, or too large to decode safely)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


class SymlinkLoop(Exception):
    """A folder link that leads back to a folder above it: walking it would never end."""

    def __init__(self, link: Path, target: Path):
        self.link, self.target = link, target
        super().__init__(f"{link} links back to {target}")


def find_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (links followed, hidden names skipped), in a fixed order: each folder's entries
    by name, a subfolder's files where its name sorts. A folder link back to one of its own ancestors raises
    :class:`SymlinkLoop`."""
    return list(_walk(Path(folder), ()))


def _walk(folder: Path, ancestors: tuple[str, ...]) -> Iterator[Path]:
    real = os.path.realpath(folder)
    if real in ancestors:
        raise SymlinkLoop(folder, Path(real))
    ancestors = (*ancestors, real)
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=True):
            yield from _walk(path, ancestors)
        elif entry.is_file(follow_symlinks=True) or entry.is_symlink():  # (a broken link: found, then unreadable)
            yield path


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit greyscale (or 32-bit integer)
        values = np.asarray(image, dtype=np.int64).clip(0, 65535)
        sixteen = image.mode.startswith("I;16") or values.max(initial=0) > 255
        image = Image.fromarray((values >> 8 if sixteen else values).astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def _resized(image: Image.Image, size: int, resize: str) -> Image.Image:
    width, height = image.size
    if (width, height) == (size, size):
        return image
    if resize == "stretch":
        return image.resize((size, size), Image.BILINEAR)
    if resize == "crop":
        scale = size / min(width, height)
        w, h = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((w, h), Image.BILINEAR) if (w, h) != (width, height) else image
        left, top = (w - size) // 2, (h - size) // 2
        return image.crop((left, top, left + size, top + size))
    scale = size / max(width, height)  # pad
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = Image.new("RGB", (size, size), (FILL, FILL, FILL))
    canvas.paste(image.resize((w, h), Image.BILINEAR), ((size - w) // 2, (size - h) // 2))
    return canvas


def read_image(path: Path, size: int, resize: str = "crop") -> torch.Tensor:
    """The image at ``path`` as a uint8 tensor 3 x ``size`` x ``size`` (see the module's doc for ``resize``);
    raises :class:`UnreadableImage` for anything that is not a decodable image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
                    image.draft(image.mode, (size, size))
                image.load()
                image = _resized(_to_rgb(ImageOps.exif_transpose(image)), size, resize)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            EOFError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, FileNotFoundError):
            reason = "no such file (a broken link?)"
        raise UnreadableImage(path, reason) from err
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
