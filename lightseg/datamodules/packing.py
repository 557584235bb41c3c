"""``lightseg data pack``: a data module's splits written as litdata chunks, read back by the streaming modules.

A pack is a folder (or an object-store prefix) holding one litdata data set per split and one
holding the pack's description::

    PACK/train/  PACK/val/  PACK/test/   chunks and index.json, one record per sample, in the
                                         data module's order
    PACK/meta/                           one record: the description below, as JSON

Records keep the files as they are: an image is its file's bytes (a JPEG is never decoded and
compressed again); a mask is its file's bytes where the file already holds the class indices
(a palette or grey PNG), and otherwise a lossless PNG of the labels the data module reads from
it (Cityscapes label ids mapped to train ids, SBD ``.mat`` files, COCO polygons, colour-coded
masks). Instance and keypoint records hold the image's bytes, its entry in the annotation file
and its usable annotations; the evaluation splits' whole annotation files travel in the
description, as COCO evaluation reads them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from lightseg.contract import DataDescription, EvaluationProtocol
from lightseg.datamodules.base import BaseDataModule, SplitDataModule
from lightseg.datamodules.coco_format import COCODataset, check_listed_size
from lightseg.datamodules.detection import DetectionDataModule
from lightseg.datamodules.files import SegmentationFiles, size_mismatch
from lightseg.datamodules.io import image_header
from lightseg.errors import LightsegError, option

#: the layout of a pack; a reader refuses another
PACK_FORMAT = 1
STAGES = ("train", "val", "test")
META = "meta"
EXTRA = "lightseg[stream]"


def require_litdata() -> Any:
    """The ``litdata`` module, or a one-line error saying how to install it."""
    try:
        import litdata
    except ImportError:
        raise LightsegError(f"packed (streaming) data needs litdata: pip install '{EXTRA}'") from None
    return litdata


def is_url(location: str) -> bool:
    """Whether ``location`` is an object-store URL (``s3://...``) rather than a local folder."""
    return "://" in location


def join(location: str, name: str) -> str:
    """``location/name`` for a folder or a URL."""
    return f"{location.rstrip('/')}/{name}"


# --- records ---------------------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8 labels, or instance ids below 65,536) as a lossless PNG."""
    if array.dtype != np.uint8:
        if array.size and (int(array.min()) < 0 or int(array.max()) > 65535):
            raise LightsegError(f"values {int(array.min())}..{int(array.max())} do not fit a 16-bit PNG")
        array = array.astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _mask_bytes(path: Path | None, labels: np.ndarray) -> bytes:
    """The mask file's bytes where they decode to ``labels`` as they are, else a PNG of ``labels``."""
    if path is not None and path.suffix.lower() == ".png":
        with Image.open(path) as img:
            same = img.mode in ("P", "L") and np.array_equal(np.asarray(img), labels)
        if same:
            return path.read_bytes()
    return png_bytes(labels)


def semantic_record(dataset: SegmentationFiles, index: int) -> dict[str, Any]:
    """Sample ``index`` of ``dataset`` as a record (checked as training would read it)."""
    sample = dataset.samples[index]
    labels = dataset.read_mask(index)
    size, _ = image_header(sample.image)
    if tuple(size) != labels.shape:
        raise size_mismatch(sample, size, labels.shape)
    instances = dataset.read_instances(index)
    return {
        "id": sample.id,
        "name": sample.image.name,
        "image": sample.image.read_bytes(),
        "mask": _mask_bytes(sample.mask, labels),
        "instances": png_bytes(instances) if instances is not None else b"",
    }


def detection_record(dataset: COCODataset, index: int) -> dict[str, Any]:
    """Image ``index`` of ``dataset`` with its listing and usable annotations as a record."""
    image_id = dataset.image_ids[index]
    info = dataset.annotations.images[image_id]
    path = dataset.images_dir / info["file_name"]
    size, _ = image_header(path)
    check_listed_size(info, path, size, dataset.annotations.source)
    return {
        "image_id": int(image_id),
        "name": str(info["file_name"]),
        "image": path.read_bytes(),
        "info": json.dumps(info),
        "annotations": json.dumps(dataset.usable[image_id]),
    }


def _call(record: Callable[[int], dict[str, Any]], blank: dict[str, Any], errors: str, index: int) -> dict[str, Any]:
    """Record ``index``; a sample that cannot be packed leaves its error in ``errors`` and a ``blank`` record.

    (An exception in a litdata worker would leave the pack waiting for it forever.)
    """
    try:
        return record(index)
    except Exception as err:
        message = str(err) if isinstance(err, LightsegError) else f"sample {index}: {type(err).__name__}: {err}"
        (Path(errors) / f"{index:012d}.txt").write_text(message)
        return blank


# --- the description -------------------------------------------------------------------------


def description_to_json(description: DataDescription) -> dict[str, Any]:
    """``description`` as JSON values."""
    value = dataclasses.asdict(description)
    protocol = description.evaluation_protocol
    if protocol is not None:
        value["evaluation_protocol"] = {
            "boundary_ratio": protocol.boundary_ratio,
            "categories": {k: list(v) for k, v in protocol.categories.items()},
            "instance_sizes": [[k, v] for k, v in protocol.instance_sizes.items()],
            "instance_categories": list(protocol.instance_categories),
        }
    return value


def description_from_json(value: dict[str, Any]) -> DataDescription:
    """The :class:`DataDescription` :func:`description_to_json` wrote."""

    def tuples(items: Any) -> Any:
        return None if items is None else tuple(tuple(i) if isinstance(i, list) else i for i in items)

    protocol = value.get("evaluation_protocol")
    return DataDescription(
        num_classes=int(value["num_classes"]),
        class_names=tuples(value.get("class_names")),
        class_colors=tuples(value.get("class_colors")),
        evaluation_protocol=None
        if protocol is None
        else EvaluationProtocol(
            boundary_ratio=float(protocol["boundary_ratio"]),
            categories={k: tuple(v) for k, v in protocol["categories"].items()},
            instance_sizes={int(k): float(v) for k, v in protocol["instance_sizes"]},
            instance_categories=tuple(protocol["instance_categories"]),
        ),
        batch_size=value.get("batch_size"),
        category_ids=tuple(value.get("category_ids") or ()),
        label_ids=tuples(value.get("label_ids")),
        keypoint_names=tuple(value.get("keypoint_names") or ()),
        skeleton=tuple((int(a), int(b)) for a, b in value.get("skeleton") or ()),
        score_caveat=value.get("score_caveat"),
    )


# --- packing ---------------------------------------------------------------------------------


@dataclasses.dataclass
class _Stage:
    """One split to write: the stages that read it, its folder, its dataset and how a record is made."""

    stages: list[str]
    folder: str
    dataset: Any
    record: Callable[[int], dict[str, Any]]


def _stages(datamodule: BaseDataModule) -> tuple[str, dict[str, str], list[_Stage]]:
    """The pack's kind, why a stage cannot be packed (by stage), and the splits to write."""
    if isinstance(datamodule, SplitDataModule):
        kind = "semantic"

        def make(stage: str) -> tuple[Any, Any]:
            transforms = datamodule.train_transform if stage == "train" else None
            dataset = datamodule.make_dataset(datamodule.splits[stage], transforms)
            if not isinstance(dataset, SegmentationFiles):
                raise LightsegError(f"{type(dataset).__name__} is not a list of image and mask files")
            return (stage == "train", datamodule.splits[stage]), dataset

        def record_of(dataset: Any) -> Callable[[int], dict[str, Any]]:
            return partial(semantic_record, dataset)

    elif isinstance(datamodule, DetectionDataModule):
        kind = datamodule.kind

        def make(stage: str) -> tuple[Any, Any]:
            dataset = datamodule.make_dataset(stage)
            return (stage == "train", dataset.annotations.source, str(dataset.images_dir)), dataset

        def record_of(dataset: Any) -> Callable[[int], dict[str, Any]]:
            return partial(detection_record, dataset)

    else:
        raise LightsegError(
            f"lightseg data pack writes semantic (SplitDataModule) and COCO-style instance or keypoint data "
            f"modules; {type(datamodule).__name__} is none of them"
        )
    missing: dict[str, str] = {}
    splits: dict[Any, _Stage] = {}
    for stage in STAGES:
        try:
            key, dataset = make(stage)
        except LightsegError as err:
            missing[stage] = str(err)
            continue
        if len(dataset) == 0:
            missing[stage] = f"the {stage} split has no sample"
            continue
        if key in splits:
            splits[key].stages.append(stage)
        else:
            splits[key] = _Stage([stage], stage, dataset, record_of(dataset))
    if not splits:
        raise LightsegError("nothing to pack: " + "; ".join(f"{stage}: {why}" for stage, why in missing.items()))
    return kind, missing, list(splits.values())


def _entry(split: _Stage) -> dict[str, Any]:
    entry: dict[str, Any] = {"folder": split.folder, "count": len(split.dataset)}
    if isinstance(split.dataset, COCODataset):
        entry["image_ids"] = [int(i) for i in split.dataset.image_ids]
    return entry


def _description(datamodule: BaseDataModule, kind: str, missing: dict[str, str], splits: list[_Stage]) -> dict:
    meta: dict[str, Any] = {
        "format": PACK_FORMAT,
        "kind": kind,
        "source": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}",
        "description": description_to_json(datamodule.describe()),
        "stages": {stage: _entry(s) for s in splits for stage in s.stages},
        "missing": missing,
    }
    if kind == "semantic":
        assert isinstance(datamodule, SplitDataModule)
        meta["ignore_index"] = datamodule.ignore_index
        meta["eval_size"] = getattr(datamodule, "eval_size", None)
    else:
        assert isinstance(datamodule, DetectionDataModule)
        flip_pairs = getattr(datamodule, "keypoint_flip_pairs", None)
        meta["flip_pairs"] = [list(p) for p in flip_pairs()] if kind == "keypoints" and flip_pairs else []
        # evaluation compares with the whole annotation file, as COCO's evaluation does; training
        # needs only each record's own annotations
        meta["annotations"] = {
            s.folder: {
                "source": s.dataset.annotations.source,
                "data": s.dataset.annotations.data
                if s.stages != ["train"]
                else {k: v for k, v in s.dataset.annotations.data.items() if k != "annotations"}
                | {"annotations": [], "images": []},
            }
            for s in splits
        }
    return meta


def _refuse_used_output(output: str) -> None:
    if is_url(output):
        return  # litdata refuses a prefix that holds data, in its own words
    path = Path(output)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LightsegError(
            f"{option('pack', 'output')} {output} exists and is not empty; give a new folder (or delete this one)"
        )


def pack_datamodule(
    datamodule: BaseDataModule, output: str, chunk_bytes: str = "64MB", workers: int = 1
) -> dict[str, Any]:
    """Write ``datamodule``'s train, val and test splits to ``output`` (a folder or URL); returns the description.

    A split that val and test share is written once. A stage whose split cannot be built
    (e.g. a test split without labels) is left out and named in the description.
    """
    litdata = require_litdata()
    if workers < 1:
        raise LightsegError(f"{option('pack', 'workers')} must be >= 1, got {workers}")
    if datamodule.bands is not None:  # a record holds an image file's bytes, which the streaming modules read as RGB
        raise LightsegError(
            f"lightseg data pack writes RGB images; {type(datamodule).__name__} reads bands {list(datamodule.bands)} "
            "of multispectral images: train from the files (packing bands is not supported yet)"
        )
    _refuse_used_output(output)
    datamodule.prepare_data()
    kind, missing, splits = _stages(datamodule)
    meta = _description(datamodule, kind, missing, splits)
    for split in splits:
        count = len(split.dataset)
        # the pack's one word per split until it is written (litdata's own bar moves only when a worker ends)
        rank_zero_info(f"packing {split.folder}: {count:,} samples into {join(output, split.folder)}")
        # the first record is made here: a broken first file stops the pack before the workers start
        blank = {key: type(value)() for key, value in split.record(0).items()}
        with tempfile.TemporaryDirectory() as errors:
            try:
                litdata.optimize(
                    fn=partial(_call, split.record, blank, errors),
                    inputs=list(range(count)),
                    output_dir=join(output, split.folder),
                    chunk_bytes=chunk_bytes,
                    num_workers=workers,
                    keep_data_ordered=True,
                    reorder_files=False,
                    verbose=False,
                    start_method="fork",
                )
            except Exception as err:
                _discard(output)
                raise LightsegError(f"packing the {split.folder} split into {output} failed: {err}") from None
            broken = sorted(Path(errors).iterdir())
            if broken:
                _discard(output)
                raise LightsegError(
                    f"{len(broken)} of the {count} samples of the {split.folder} split cannot be packed (first: "
                    f"{broken[0].read_text()}); {_discarded(output)}. Fix them (lightseg data check names every "
                    "problem) and pack again"
                )
    # the description last: a pack without one is incomplete, and readers refuse it
    try:
        litdata.optimize(
            fn=partial(_meta_record, json.dumps(meta)),
            inputs=[0],
            output_dir=join(output, META),
            chunk_size=1,
            num_workers=1,
            verbose=False,
            start_method="fork",
        )
    except Exception as err:
        _discard(output)
        raise LightsegError(f"writing the description of the pack into {output} failed: {err}") from None
    return meta


def _discard(output: str) -> None:
    """Remove a local pack that failed (its folder was new or empty: see :func:`_refuse_used_output`)."""
    if not is_url(output):
        shutil.rmtree(Path(output), ignore_errors=True)


def _discarded(output: str) -> str:
    return f"{output} was removed" if not is_url(output) else f"delete what was written under {output}"


def _meta_record(text: str, _: int) -> dict[str, str]:
    return {"meta": text}
