"""A folder of image files decoded once: uint8 images N x 3 x S x S in one ``.npy`` file under ``dataset.cache_dir``,
which later runs (and every job of a sweep) map instead of decoding again.

The cache is keyed by the files (relative path, size, modification time), the side ``S`` and the resize policy:
a changed, added or removed file makes a new key. It is decoded by worker processes, each writing its rows into
the memory-mapped file, with a progress bar on a terminal; it is written under a temp name and renamed, so a run
killed while decoding leaves no half cache, and a lock makes concurrent jobs of a sweep decode it once. Files
that do not decode are recorded as bad (with the reason), so every run skips them alike.

Beside the images, ``<key>.json`` lists the files and the bad ones, and ``<key>.sums.npy`` holds each image's
per-channel sums (for the training images' mean and std). A folder too large for memory is streamed from its
files (``dataset.pipeline=stream``): then the same pass runs once without keeping the pixels, and only those two
files are kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mpl_runner.data.image_files import UnreadableImage, read_image
from mpl_runner.core.files import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

VERSION = 1  # of the cache's layout and decoding: a change makes new keys
CHUNK = 256  # images a worker decodes per task


def cache_key(root: Path, files: list[Path], size: int, resize: str) -> str:
    digest = hashlib.sha256(f"v{VERSION} {size} {resize}\n".encode())
    prefix = len(str(root)) + 1  # (the files are root / <relative path>: slicing the string is cheaper than relative_to)
    for path in map(str, files):
        try:
            stat = os.stat(path)
        except OSError:  # (a broken link: unreadable, but part of the key)
            stat = os.lstat(path)
        digest.update(f"{path[prefix:]}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class Decoded:
    """The decoded folder: ``images`` (read-only memory map, N x 3 x S x S uint8, one row per file; None where the
    pixels were not kept), ``bad`` (row -> reason) and per-image channel sums ``sums`` (N x 6: sum and sum of
    squares of each channel, in 0..1)."""

    def __init__(self, path: Path, pixels: bool):
        self.path = path
        meta = json.loads(path.with_suffix(".json").read_text())
        self.images = np.load(path, mmap_mode="r") if pixels else None
        self.side = meta["image_size"]
        self.bad = {int(row): reason for row, reason in meta["bad"].items()}
        self.sums = np.load(_sums_path(path))

    def mean_std(self, rows) -> tuple[list[float], list[float]]:
        """Per-channel mean and std over the images ``rows`` (bad ones left out)."""
        rows = [r for r in rows if r not in self.bad]
        pixels = max(len(rows), 1) * self.side * self.side
        total = self.sums[rows].sum(axis=0)
        mean = total[:3] / pixels
        std = np.sqrt(np.maximum(total[3:] / pixels - mean**2, 0.0))
        return mean.tolist(), np.maximum(std, 1e-3).tolist()


@contextmanager
def _locked(path: Path):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sums_path(path: Path) -> Path:
    return path.with_suffix(".sums.npy")


def load_or_decode(root: Path, files: list[Path], size: int, resize: str, cache_dir: Path, workers: int,
                   pixels: bool = True) -> Decoded:
    """The decoded cache of ``files`` (under ``root``), decoding it first where there is none; ``pixels=False``
    (streaming): only the list of bad files and the sums are needed."""
    key = cache_key(root, files, size, resize)
    path = cache_dir / f"{key}.npy"
    with _locked(cache_dir / f".{key}.lock"):
        have = path.with_suffix(".json").is_file() and _sums_path(path).is_file() and (path.is_file() or not pixels)
        if have:
            log.info(f"image cache {path.with_suffix('')}: {len(files)} files at {size}x{size}, decoded before")
        else:
            _decode(root, files, size, resize, path, workers, pixels)
    return Decoded(path, pixels)


def _decode(root: Path, files: list[Path], size: int, resize: str, path: Path, workers: int, pixels: bool) -> None:
    what = f"into {path}" if pixels else f"to check them and measure their mean (cache {path.with_suffix('')})"
    log.info(f"decoding {len(files)} images {what} ({size}x{size}, {workers} processes; once: later runs reuse it)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if pixels:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size)).flush()
        bad, sums = {}, np.zeros((len(files), 6))
        target = str(tmp) if pixels else None
        chunks = [(target, [str(f) for f in files[i:i + CHUNK]], i, size, resize) for i in range(0, len(files), CHUNK)]
        bar = tqdm(total=len(files), desc="decoding images", unit="img", disable=None, file=sys.stderr)
        for first, chunk_bad, chunk_sums in _decoded_chunks(chunks, workers):
            bad.update(chunk_bad)
            sums[first:first + len(chunk_sums)] = chunk_sums
            bar.update(len(chunk_sums))
        bar.close()
        if pixels:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, sums)
    atomic_write_bytes(_sums_path(path), buffer.getvalue())
    atomic_write_json(path.with_suffix(".json"), {  # last: its presence says the rest is there
        "files": [f.relative_to(root).as_posix() for f in files], "image_size": size, "resize": resize,
        "bad": {str(row): reason for row, reason in sorted(bad.items())}})


def _decoded_chunks(chunks: list[tuple], workers: int):
    """:func:`_decode_chunk` of each chunk, in ``workers`` processes (here, for one), as each finishes."""
    if workers == 1:
        yield from (_decode_chunk(*chunk) for chunk in chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done in as_completed([pool.submit(_decode_chunk, *chunk) for chunk in chunks]):
            yield done.result()


def _decode_chunk(tmp: str | None, paths: list[str], first: int, size: int, resize: str):
    """Decode ``paths`` into rows ``first ..`` of the memory-mapped ``tmp`` (None: keep no pixels); returns
    (first, bad rows, sums)."""
    images = np.load(tmp, mmap_mode="r+") if tmp else None
    bad, sums = {}, np.zeros((len(paths), 6))
    for k, path in enumerate(paths):
        try:
            image = read_image(Path(path), size, resize).numpy()
        except UnreadableImage as err:
            bad[first + k] = err.reason
            continue
        if images is not None:
            images[first + k] = image
        scaled = image.reshape(3, -1).astype(np.float64) / 255.0
        sums[k] = np.concatenate([scaled.sum(axis=1), (scaled**2).sum(axis=1)])
    if images is not None:
        images.flush()
    return first, bad, sums
