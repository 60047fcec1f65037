"""``mpl-export RUN_DIR --onnx FILE``: the model a finished run handed out as an ONNX file, checked against PyTorch
under onnxruntime before it is written.

The ONNX model takes ``images`` (``inputs`` for data that are not images), float32 N x C x H x W already
normalised as ``model.json``'s ``preprocess`` says (any N), and gives ``logits`` N x classes. Its metadata
(``metadata_props``) holds ``class_names``, ``preprocess`` and the whole ``model.json``, each as JSON.
Needs the ``onnx`` extra: ``pip install 'mpl-runner[onnx]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import torch

from mpl_runner.core.errors import UserError, one_line

PROG = "mpl-export"
TOLERANCE = 1e-4  # largest |onnxruntime - PyTorch| a logit may differ by
INSTALL = "pip install 'mpl-runner[onnx]'"


def _modules():
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as err:
        raise UserError(f"ONNX export needs onnx, onnxruntime and onnxscript ({err.name} is missing): {INSTALL}") \
            from err
    return onnx, onnxruntime


def to_onnx(model: torch.nn.Module, meta: dict, batch: int = 2) -> bytes:
    """``model`` (eval mode, on the CPU) as a serialised ONNX model with a dynamic batch axis."""
    onnx, _ = _modules()
    name = "images" if meta.get("preprocess") else "inputs"
    example = torch.zeros(batch, *meta["input_shape"])
    with contextlib.redirect_stdout(io.StringIO()), torch.inference_mode(False):  # (the exporter's progress lines)
        program = torch.onnx.export(model, (example,), input_names=[name], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True)
    proto = program.model_proto
    for key, value in (("class_names", meta["class_names"]), ("preprocess", meta.get("preprocess")),
                       ("mpl_runner_model", meta)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value, sort_keys=True)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def max_difference(model: torch.nn.Module, onnx_bytes: bytes, input_shape, batch: int = 5, seed: int = 0) -> float:
    """The largest |onnxruntime - PyTorch| of the logits on a random normal batch of ``batch`` inputs."""
    _, ort = _modules()
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.inference_mode():
        expected = model(x).float()
    return float((torch.from_numpy(got) - expected).abs().max())


def export(run_dir: Path, out: Path) -> float:
    """Write ``out`` (the run's model as ONNX) once it matches PyTorch within :data:`TOLERANCE`; returns the
    largest difference found."""
    from mpl_runner.core.files import atomic_write_bytes
    from mpl_runner.record.model_file import load_model

    _modules()
    if out.is_dir():
        raise UserError(f"--onnx {out} is a folder; give a file name, e.g. {out / 'model.onnx'}")
    model, meta = load_model(run_dir, "cpu")
    try:
        data = to_onnx(model, meta)
    except UserError:
        raise
    except Exception as err:  # (an operator the exporter cannot translate: one line, no file)
        raise UserError(f"the model in {run_dir} could not be exported to ONNX: {one_line(err)}") from err
    difference = max_difference(model, data, meta["input_shape"])
    if not difference <= TOLERANCE:
        raise UserError(f"onnxruntime's logits differ from PyTorch's by up to {difference:.3g} (more than "
                        f"{TOLERANCE:g}) on a random batch; {out} not written")
    atomic_write_bytes(out, data)
    return difference


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        fail(f"{message} (see {PROG} --help)")


def fail(message: str):
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog=PROG, description="Write the model a finished mpl-run run handed out as an ONNX file.")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run's dir (holds model.json)")
    parser.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="the ONNX file to write")
    args = parser.parse_args(argv)
    try:
        difference = export(args.run_dir, args.onnx)
    except UserError as err:
        fail(str(err))
    print(f"wrote {args.onnx}; onnxruntime matches PyTorch: max |difference| {difference:.2e} on a random batch "
          f"(tolerance {TOLERANCE:g})")


if __name__ == "__main__":
    main()
