"""What every data source hands the methods: labeled examples and two views of unlabeled ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    x_l: torch.Tensor  # labeled inputs
    y_l: torch.Tensor  # their labels
    x_uw: torch.Tensor | None = None  # unlabeled inputs, weak view (None: a labeled-only batch)
    x_us: torch.Tensor | None = None  # the same unlabeled inputs, strong view

    def _map(self, fn) -> "Batch":
        return Batch(*(None if t is None else fn(t) for t in (self.x_l, self.y_l, self.x_uw, self.x_us)))

    def to(self, device: torch.device, non_blocking: bool = False, channels_last: bool = False) -> "Batch":
        import torch

        def move(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device, non_blocking=non_blocking)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

        return self._map(move)

    def shard(self, rank: int, world: int) -> "Batch":
        """Rank ``rank``'s share of a global batch: every ``world``-th example from the ``rank``-th on."""
        return self if world == 1 else self._map(lambda t: t[rank::world])

    def __len__(self) -> int:
        """Inputs in the batch, every view counted."""
        return sum(len(t) for t in (self.x_l, self.x_uw, self.x_us) if t is not None)


@dataclass
class SSLData:
    """A semi-supervised data set, ready to train on.

    ``train_batches(start, rank, world, views, labeled_batch_size, stream)`` returns the endless iterator of
    :class:`Batch` a run sees from batch ``start`` of stream ``stream`` on (given the RNG state a checkpoint
    restores, so a resumed run sees the same batches): rank ``rank``'s share of each global batch, the same global
    batches whatever the number of ranks; ``views="labeled"`` builds labeled batches alone (of
    ``labeled_batch_size``, or the data set's own size when None), ``"ssl"`` adds the unlabeled views; ``eval_splits`` maps a
    split name ("test", ...) to a re-iterable of ``(inputs, labels)`` batches; ``figures`` (optional) draws what
    a person wants to see of a set of trained models and of the model that draws pseudo labels (None where the method
has none; the method says which), keyed by file stem.
    """

    num_classes: int
    input_shape: tuple[int, ...]
    train_batches: Callable[..., Iterator[Batch]]
    eval_splits: dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]]
    labeled_indices: list[int]
    figures: Callable[[dict[str, torch.nn.Module], torch.nn.Module | None], dict[str, Any]] | None = None
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    val_indices: list[int] = field(default_factory=list)  # held out for validation: never labeled nor unlabeled
    # what an image file goes through to become an input (image data sets): {"image_size", "resize", "mean", "std"}
    preprocess: dict[str, Any] | None = None


def random_rows(n: int, batch_size: int | None, device: torch.device) -> torch.Tensor | None:
    """Random row indices (with replacement) for one step, or None for "all ``n`` rows"."""
    import torch

    if batch_size is None or batch_size >= n:
        return None
    return torch.randint(n, (batch_size,), device=device)


def tensor_batches(
    x_u: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor, cfg, labeled_view: Callable | None, weak: Callable,
    strong: Callable, start: int = 0, rank: int = 0, world: int = 1, views: str = "ssl",
    labeled_batch_size: int | None = None, stream: int = 0,
) -> Iterator[Batch]:
    """The ``train_batches`` of a data set held whole as tensors on the device (``cfg``: its config node, with
    ``labeled_batch_size`` and ``unlabeled_batch_size``; None: every row each step). Global batches drawn from the
    global RNG (a checkpoint restores its state, so ``start`` and ``stream`` need nothing more), every rank drawing
    the same, then cut to this rank's share. ``labeled_view`` (None: none) augments the labeled inputs, ``weak`` and
    ``strong`` make the two views of the unlabeled ones; ``views="labeled"`` leaves the unlabeled ones out."""
    while True:
        rows = random_rows(len(x_l), labeled_batch_size or cfg.labeled_batch_size, x_l.device)
        inputs, labels = (x_l, y_l) if rows is None else (x_l[rows], y_l[rows])
        batch = Batch(labeled_view(inputs) if labeled_view else inputs, labels)
        if views == "ssl":
            rows = random_rows(len(x_u), cfg.unlabeled_batch_size, x_u.device)
            xu = x_u if rows is None else x_u[rows]
            batch = Batch(batch.x_l, batch.y_l, weak(xu), strong(xu))
        yield batch.shard(rank, world)
