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
    a person wants to see of a set of trained models, keyed by file stem.
    """

    num_classes: int
    input_shape: tuple[int, ...]
    train_batches: Callable[..., Iterator[Batch]]
    eval_splits: dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]]
    labeled_indices: list[int]
    figures: Callable[[dict[str, torch.nn.Module]], dict[str, Any]] | None = None
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    val_indices: list[int] = field(default_factory=list)  # held out for validation: never labeled nor unlabeled
    # what an image file goes through to become an input (image data sets): {"image_size", "resize", "mean", "std"}
    preprocess: dict[str, Any] | None = None
