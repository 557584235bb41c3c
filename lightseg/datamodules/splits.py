"""Splitting a list of samples into train / val / test when the data set does not say how.

A split by a hash of each sample's name stays the same when files are added; a handful of
images is split so that training keeps an image of every class where it can.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from lightning.pytorch.utilities import rank_zero_info

from lightseg.datamodules.files import Sample

SPLITS = ("train", "val", "test")
#: below this many images, a hash split keeps every class in training where it can (:func:`small_split`)
SMALL_SET = 10


def hash_split_position(key: str, seed: int) -> float:
    """Where ``key`` falls in [0, 1) for the hash split."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_split(key: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """``train``, ``val`` or ``test`` for ``key``, from a hash of it: adding files never moves the others."""
    position = hash_split_position(key, seed)
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"


def split_by_hash(
    samples: Sequence[Sample],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    classes_of: Callable[[Sample], set[int]],
    where: str,
) -> dict[str, list[Sample]]:
    """The samples by split: :func:`small_split` below :data:`SMALL_SET` samples, else :func:`hash_split` (logged).

    ``classes_of`` gives a sample's classes (read only for a small set); ``where`` names the
    data set in the log line.
    """
    if 1 < len(samples) < SMALL_SET and val_fraction > 0:
        return small_split(samples, val_fraction, seed, classes_of, where)
    result: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for sample in samples:
        result[hash_split(sample.id, val_fraction, test_fraction, seed)].append(sample)
    rank_zero_info(
        f"{where}: split by name hash (seed {seed}): " + ", ".join(f"{len(v)} {k}" for k, v in result.items())
    )
    return result


def small_split(
    samples: Sequence[Sample],
    val_fraction: float,
    seed: int,
    classes_of: Callable[[Sample], set[int]],
    where: str,
) -> dict[str, list[Sample]]:
    """A few images: ``val_fraction`` of them (at least one) for validation, keeping every class in training.

    A hash split of 3 images may leave 1 for training; here the images go to validation in
    hash order, each only if every class it holds is still in another training image; where
    that cannot be, the share still goes to validation.
    """
    order = sorted(samples, key=lambda s: hash_split_position(s.id, seed))
    wanted = min(len(samples) - 1, max(1, round(len(samples) * val_fraction)))
    classes = {s.id: classes_of(s) for s in samples}
    train: list[Sample] = list(order)
    val: list[Sample] = []
    for sample in order:
        if len(val) == wanted:
            break
        others = set().union(*(classes[t.id] for t in train if t is not sample))
        if classes[sample.id] <= others:
            train.remove(sample)
            val.append(sample)
    for sample in order:
        if len(val) < wanted and sample in train:
            train.remove(sample)
            val.append(sample)
    rank_zero_info(
        f"{where}: {len(samples)} images split {len(train)} train / {len(val)} val (a small set: training keeps an "
        f"image of every class where it can; validation: {', '.join(s.id for s in val)})"
    )
    return {"train": train, "val": val, "test": []}
