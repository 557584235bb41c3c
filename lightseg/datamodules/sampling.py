"""Which process sees which sample, in which order, with which random draws.

Evaluation: every sample to exactly one process, none padded in (:class:`EvaluationShardSampler`).
Training: an epoch's shuffle is drawn from the run's seed and the epoch number, and each sample's
augmentations from its own seed (seed, epoch, index), not from the process-wide random
stream. So what a training step sees depends neither on the data loader's workers nor on
what ran before it in the process, and a run resumed from a checkpoint saved in the middle
of an epoch (Ctrl-C, a cluster's requeue signal) skips the batches already trained and goes
on exactly as an uninterrupted run: the same order, the same augmentations, and the global
random stream (dropout) restored from the checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch import distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from typing_extensions import override

#: a sample's augmentation seed: a 63-bit mix of (seed, epoch, index)
_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded with ``seed``."""
    value = (seed * _MIX + epoch) * _MIX + index
    value ^= value >> 29
    return (value * _MIX) % (1 << 63)


class TrainingOrder(DistributedSampler[Any]):
    """An epoch's shuffle from (seed, epoch), this process's share of it, and each sample's augmentation seed.

    Yields ``(index, seed)`` pairs for :class:`SeededSamples`. With one process it is a plain
    shuffle; under DDP it is a ``DistributedSampler`` (Lightning keeps it), every process
    drawing the same permutation. ``batches_done`` tells, when the epoch's iterator starts,
    how many batches of the epoch were trained before a resumed run's checkpoint: those are
    skipped (the trainer makes the iterator again once the checkpoint is restored:
    :class:`~lightseg.cli.adapter.FitLoopResumedAtItsBatch`).
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        seed: int,
        batch_size: int,
        batches_done: Callable[[], int] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if num_replicas is None and not (dist.is_available() and dist.is_initialized()):
            num_replicas, rank = 1, 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.batches_done = batches_done

    @override
    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        # a resumed epoch only: once its first epoch is done, the fit loop no longer restarts
        skip = self.batches_done() * self.batch_size if self.batches_done is not None else 0
        if skip >= len(indices):  # saved at the epoch's end: the next epoch starts whole
            skip = 0
        return ((index, sample_seed(self.seed, self.epoch, index)) for index in indices[skip:])


class SeededSamples(Dataset[Any]):
    """``dataset``'s items, each drawn with the random seed :class:`TrainingOrder` gives it.

    The augmentations (torchvision's transforms draw from torch's global generator) run with
    the generator seeded for the sample and put back afterwards, in the main process or a
    worker alike. Other attributes are the dataset's.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU's only: CUDA's stream stays the model's
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableLoader(DataLoader[Any]):
    """The training loader: resumable mid-epoch (Lightning asks a loader for ``state_dict`` / ``load_state_dict``).

    Its position needs no state of its own: :class:`TrainingOrder` reads the restored
    training progress when the epoch starts.
    """

    def state_dict(self) -> dict[str, Any]:
        """The epoch whose order the loader draws (for the record: the restored loop progress decides)."""
        sampler = self.sampler
        return {"epoch": int(getattr(sampler, "epoch", 0))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the order is a function of the seed and epoch, the position the loop's."""


def run_seed() -> int:
    """The run's seed (``seed_everything``; 0 where the run was not seeded)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def batches_done_in_epoch(trainer: Trainer | None) -> int:
    """On a resumed ``fit``, the batches of the current epoch the checkpoint had trained (0 otherwise).

    A checkpoint saved in ``on_train_batch_end`` (the requeue and step checkpoints) has the
    batch processed but not yet counted completed: Lightning counts it on restart, so does this.
    """
    if trainer is None or not trainer.fit_loop.restarting:
        return 0
    progress = trainer.fit_loop.epoch_loop.batch_progress
    total: Any = progress.total  # a _ProcessedTracker (Lightning types it as its base)
    done = progress.current.completed
    if total.started == total.ready and total.processed == total.started and total.completed == total.processed - 1:
        done += 1
    return done


class EvaluationShardSampler(DistributedSampler[Any]):
    """Under DDP, this process's share of an evaluation split: sample ``i`` to process ``i mod N``.

    Lightning's evaluation sampler pads the last batch with repeated samples, so metrics would
    change with the number of processes; this one gives every sample to exactly one process
    (metric states are summed across processes afterwards). Unlike Lightning's unpadded
    sampler it allows a process no sample at all (fewer images than processes): the trainer's
    evaluation loop (:class:`~lightseg.cli.adapter.EveryProcessEvaluationLoop`) still runs that
    process's epoch-end hooks, so the reductions meet. Lightning keeps a loader's own
    ``DistributedSampler``. ``every_process``: samples every process reads (a large image
    whose rows the processes share); the others are dealt out as above.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        num_replicas: int | None = None,
        rank: int | None = None,
        every_process: Sequence[int] = (),
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.total_size = len(dataset)  # type: ignore[arg-type]
        shared = set(every_process)
        dealt = [i for i in range(self.total_size) if i not in shared]
        self.indices = sorted(shared | set(dealt[self.rank :: self.num_replicas]))
        self.num_samples = len(self.indices)

    @override
    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def evaluation_sampler(
    dataset: Dataset[Any], every_process: Callable[[], Sequence[int]] | None = None
) -> Sampler[int] | None:
    """:class:`EvaluationShardSampler` under DDP, ``None`` (the loader's own order) otherwise.

    ``every_process()``: the samples every process reads (asked only under DDP).
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    return EvaluationShardSampler(dataset, every_process=every_process() if every_process else ())
