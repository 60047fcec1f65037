"""``mpl-predict RUN_DIR PATH...``: label image files (or every file under folders, recursively) with the model a
finished run handed out (``model.safetensors`` / ``model.json``, :mod:`mpl_runner.record.model_file`).

Each file goes through what the run's evaluation did to its test images: :func:`read_image` at the run's image size
and resize policy, then 0..1 and ``(x - mean) / std`` (:func:`batched_augment.normalize`), the model in eval mode.

The CSV, one row per file in the order found (arguments in order, a folder's files sorted by path)::

    path,status,class,probability,class_2,probability_2,...,class_K,probability_K,reason

``status`` is ``ok`` or ``unreadable`` (then ``reason`` says why and the class columns are empty); ``class`` is the
predicted class (the argmax), ``probability`` its softmax probability, ``class_k``/``probability_k`` the k-th most
probable classes (``--top-k K``, default 5 or the number of classes). On stderr: how many files were labeled and
how many were unreadable, and, when every labeled file's folder is named after one of the run's classes (a
``test/<class>/...`` folder), the accuracy on them, which is the run's ``test/acc`` for its own test images.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mpl_runner.core.errors import UserError

PROG = "mpl-predict"


@dataclass
class Row:
    path: Path
    status: str = "ok"  # ok | unreadable
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), most probable first
    reason: str = ""


@dataclass
class Predictions:
    rows: list[Row]
    class_names: list[str]
    correct: int | None = None  # when every labeled file's folder names a class: how many the model got right
    counted: int = 0

    @property
    def labeled(self) -> int:
        return sum(r.status == "ok" for r in self.rows)

    @property
    def unreadable(self) -> int:
        return len(self.rows) - self.labeled

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None or not self.counted else self.correct / self.counted


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available here (use --device cpu)")
    return torch.device(name)


def image_files(paths: list[Path]) -> list[Path]:
    """The files ``paths`` name: a file itself, a folder every file under it."""
    from mpl_runner.data.image_files import SymlinkLoop, find_files

    found = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist")
        if path.is_dir():
            try:
                inside = find_files(path)
            except SymlinkLoop as err:
                raise UserError(f"{path}: a folder link loops: {err}") from err
            except PermissionError as err:
                raise UserError(f"{path}: permission denied: {err.filename}") from err
            if not inside:
                raise UserError(f"{path} holds no files")
            found += inside
        else:
            found.append(path)
    return found


def _decoded(files: list[Path], size: int, resize: str, batch: int) -> Iterator[list[tuple[Path, torch.Tensor | str]]]:
    """``files`` in chunks of up to ``batch`` readable ones: (path, uint8 image) or (path, why it is unreadable)."""
    from mpl_runner.data.image_files import UnreadableImage, read_image

    chunk, readable = [], 0
    for path in files:
        try:
            chunk.append((path, read_image(path, size, resize)))
            readable += 1
        except UnreadableImage as err:
            chunk.append((path, err.reason))
        except OSError as err:  # (a file that vanished or may not be read between listing and reading)
            chunk.append((path, f"{type(err).__name__}: {err.strerror or err}"))
        if readable == batch:
            yield chunk
            chunk, readable = [], 0
    if chunk:
        yield chunk


def predict(run_dir: Path, paths: list[Path], device: str = "cpu", batch: int = 64, top_k: int = 5) -> Predictions:
    """Label the image files under ``paths`` with the run's model (see the module's doc)."""
    from mpl_runner.data.batched_augment import normalize
    from mpl_runner.record.model_file import load_model, read_meta

    if batch < 1:
        raise UserError(f"--batch {batch}: give at least 1")
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: give at least 1")
    torch_device = resolve_device(device)
    meta = read_meta(run_dir)
    pre = meta.get("preprocess")
    if pre is None:
        raise UserError(f"the model in {run_dir} takes no image files: it was trained on {meta.get('dataset')}, "
                        f"whose examples are not images read from files")
    files = image_files(paths)
    model, meta = load_model(run_dir, torch_device)
    names = meta["class_names"]
    k = min(top_k, len(names))
    rows = []
    with torch.inference_mode():
        for chunk in _decoded(files, pre["image_size"], pre["resize"], batch):
            images = [image for _, image in chunk if isinstance(image, torch.Tensor)]
            if images:
                x = normalize(torch.stack(images).to(torch_device), pre["mean"], pre["std"])
                logits = model(x).float()
                # A stable sort of the logits puts the argmax first (the first of equal ones), as evaluation's
                # argmax picks it.
                order = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
                probs = torch.softmax(logits, dim=1).gather(1, order)
                tops = iter(zip(order.cpu().tolist(), probs.cpu().tolist()))
            for path, image in chunk:
                if isinstance(image, torch.Tensor):
                    classes, p = next(tops)
                    rows.append(Row(path, top=[(names[c], q) for c, q in zip(classes, p)]))
                else:
                    rows.append(Row(path, status="unreadable", reason=image))
    result = Predictions(rows, names)
    ok = [r for r in rows if r.status == "ok"]
    if ok and all(r.path.parent.name in names for r in ok):
        result.counted = len(ok)
        result.correct = sum(r.path.parent.name == r.top[0][0] for r in ok)
    return result


def to_csv(result: Predictions, top_k: int) -> str:
    k = min(top_k, len(result.class_names))
    header = ["path", "status", "class", "probability"]
    for i in range(2, k + 1):
        header += [f"class_{i}", f"probability_{i}"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "reason"])
    for row in result.rows:
        cells = [c for name, p in row.top for c in (name, f"{p:.6f}")]
        writer.writerow([str(row.path), row.status, *cells, *[""] * (2 * k - len(cells)), row.reason])
    return out.getvalue()


def summary(result: Predictions) -> list[str]:
    lines = [f"{result.labeled} images labeled, {result.unreadable} unreadable"]
    for row in [r for r in result.rows if r.status != "ok"][:5]:
        lines.append(f"  unreadable: {row.path}: {row.reason}")
    if result.accuracy is not None:
        lines.append(f"accuracy {100 * result.accuracy:.2f}% on {result.counted} images whose folder names their "
                     f"class ({result.correct} right)")
    return lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other mistake
        fail(f"{message} (see {PROG} --help)")


def fail(message: str):
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog=PROG, description="Label image files with the model a finished mpl-run run handed out.",
                     epilog="CSV columns: path,status,class,probability,class_2,probability_2,...,reason "
                            "(status ok or unreadable).")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run's dir (holds model.json)")
    parser.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="image files or folders (recursively)")
    parser.add_argument("--out", type=Path, help="write the CSV here (atomically) instead of to stdout")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=64, help="images a forward pass (default 64)")
    parser.add_argument("--top-k", type=int, default=5, help="most probable classes a row lists (default 5)")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.is_dir():
        fail(f"--out {args.out} is a folder; give a file name, e.g. {args.out / 'preds.csv'}")
    try:
        result = predict(args.run_dir, args.paths, args.device, args.batch, args.top_k)
        text = to_csv(result, args.top_k)
        if args.out is not None:
            from mpl_runner.core.files import atomic_write_bytes

            atomic_write_bytes(args.out, text.encode())
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except UserError as err:
        fail(str(err))
    except BrokenPipeError:  # (the CSV piped into a reader that stopped early, e.g. head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    for line in summary(result):
        print(line, file=sys.stderr)


if __name__ == "__main__":
    main()
