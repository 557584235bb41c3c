"""``lightseg export``: a trained model as ONNX, TorchScript or torch.export, verified against PyTorch.

The exported graph holds the model's input normalisation and its post-processing: it takes
RGB images in [0, 1] of any size (semantic: ``[B,3,H,W]`` float32, dynamic batch, height
and width, or one height and width with ``input_size``; R-CNN: one ``[3,H,W]`` image) and
returns what was asked for (semantic: ``logits``, ``probs`` or ``labels``; R-CNN: boxes,
the data set's category ids, scores, masks / keypoints). Sliding windows, test-time
augmentation and the dense CRF run outside the graph and are refused at export time (they
would silently be missing otherwise).

Every export is loaded back by its own runtime and run on images of two sizes (and, for
the R-CNN tasks, an empty image); the outputs are compared with PyTorch's, and a mismatch
fails the command with the numbers. The file is written under a temporary name and renamed
only once verified, with ``<output>.json`` beside it (class names and colours, input
convention, what is outside the graph, the config and checkpoint, the verification).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn

import lightseg
from lightseg.checkpoints import load_checkpoint
from lightseg.contract import data_description, data_palette
from lightseg.errors import LightsegError, option
from lightseg.export.graphs import SemanticOutput
from lightseg.export.kinds import ExportKind, export_kind
from lightseg.export.verify import compare_with_pytorch, require, run_exported

if TYPE_CHECKING:
    pass

Format = Literal["onnx", "torchscript", "pt2"]
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}


class ExportSettings:
    """What ``lightseg export`` writes (``--export.*``).

    Args:
        format: ``onnx``, ``torchscript`` (``torch.jit``) or ``pt2`` (``torch.export``).
        output: the file to write; default ``model.onnx`` / ``model.pt`` / ``model.pt2``.
        semantic_output: what a semantic graph returns: ``logits`` ``[B,C,H,W]``, ``probs``
            (softmax) or ``labels`` ``[B,H,W]`` (uint8 for up to 256 classes, int64 above).
        mask_threshold: R-CNN masks as uint8 0/1 above this probability; ``null`` keeps the
            ``[N,1,H,W]`` probabilities.
        opset: ONNX opset (default 17 for semantic models; at least 16 for R-CNN, whose
            RoiAlign then matches torchvision exactly).
        overwrite: replace an existing output file.
        verify_sizes: the ``(H, W)`` of the images the export is verified on (at least two).
        input_size: export for this one ``(H, W)``: the graph then takes only images of that size
            (resize them to it, and the output back) and is verified on images of that size. For
            models whose graph cannot follow the input size (Mask2Former); any semantic model can
            be exported so (a fixed-shape graph, as some deployment runtimes want).
    """

    def __init__(
        self,
        format: Format = "onnx",
        output: str | None = None,
        semantic_output: SemanticOutput = "labels",
        mask_threshold: float | None = 0.5,
        opset: int | None = None,
        overwrite: bool = False,
        verify_sizes: list[tuple[int, int]] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        self.format: Format = format
        self.output = Path(output if output is not None else f"model{SUFFIXES[format]}")
        self.semantic_output: SemanticOutput = semantic_output
        self.mask_threshold = mask_threshold
        self.opset = opset
        self.overwrite = overwrite
        if input_size is not None and (len(input_size) != 2 or min(input_size) < 16):
            raise LightsegError(f"{option('export', 'input_size')} needs (H, W) of at least 16, got {input_size}")
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        if self.input_size is not None and verify_sizes and any(tuple(s) != self.input_size for s in verify_sizes):
            given, verified = option("export", "input_size"), option("export", "verify_sizes")
            raise LightsegError(
                f"{given} {list(self.input_size)} fixes the graph to one size, and {verified} {verify_sizes} asks for "
                f"others; leave {verified} out (it is verified at the input size)"
            )
        default = [self.input_size] * 2 if self.input_size else [(320, 480), (257, 353)]
        self.verify_sizes = [tuple(s) for s in (verify_sizes or default)]
        if len(self.verify_sizes) < 2 or any(len(s) != 2 or min(s) < 16 for s in self.verify_sizes):
            raise LightsegError(
                f"{option('export', 'verify_sizes')} needs two or more (H, W) of at least 16, got {verify_sizes}"
            )


@dataclass
class ExportResult:
    """What was written and how it compared with PyTorch."""

    path: Path
    metadata_path: Path
    verification: list[dict[str, Any]] = field(default_factory=list)
    verified_on: str = "random images"


def category_ids(task: LightningModule, datamodule: LightningDataModule | None) -> list[int]:
    """The data set's category id of each label (the labels themselves without a data module that has them)."""
    return export_kind(task).category_ids(datamodule)


def _check_exportable(kind: ExportKind, settings: ExportSettings) -> None:
    if settings.format == "onnx":  # before any work: writing and verifying need both
        require("onnx")
        require("onnxruntime")
    kind.check(settings)


def data_images(datamodule: LightningDataModule | None, count: int = 2) -> list[torch.Tensor]:
    """The first ``count`` validation images of ``datamodule`` (``[3,H,W]`` in [0, 1]); none where it has no data here.

    Exports are often made where the data is not (a deployment machine): the verification then
    falls back to random images, and the metadata says which it used.
    """
    if datamodule is None:
        return []
    try:
        datamodule.setup("validate")
        dataset = cast(Any, datamodule).val_dataset
        return [dataset[k]["image"].float() for k in range(min(count, len(dataset)))]
    except Exception:  # no data on this machine, or a data module without a validation set
        return []


def _samples(
    task: LightningModule, sizes: Sequence[tuple[int, ...]], images: Sequence[torch.Tensor] = ()
) -> list[torch.Tensor]:
    """Verification inputs: ``images`` (else random ones) resized to each of ``sizes``, as the task's kind takes them.

    Semantic: the first a batch of two, then one image per size; R-CNN: one image per size and a blank one.
    """
    generator = torch.Generator().manual_seed(0)
    kind = export_kind(task)

    def image(k: int, size: tuple[int, ...]) -> torch.Tensor:
        if not images:
            return torch.rand(kind.context.in_channels, *size, generator=generator)
        resized = F.interpolate(images[k % len(images)][None], size=size, mode="bilinear", antialias=True)
        return resized[0].clamp(0, 1)

    return kind.samples(image, sizes)


def _write(graph: nn.Module, task: LightningModule, settings: ExportSettings, path: Path) -> None:
    kind = export_kind(task)
    example = _samples(task, settings.verify_sizes[:1])[0]
    names = kind.output_names(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: the verification decides
        if settings.format == "onnx":
            axes = kind.onnx_axes(names, settings)
            opset = settings.opset or kind.default_opset
            common: dict[str, Any] = {"input_names": ["image"], "output_names": names}
            try:
                torch.onnx.export(
                    graph, (example,), str(path), dynamic_axes=axes, opset_version=opset, dynamo=False, **common
                )
            except torch.onnx.errors.UnsupportedOperatorError:
                if not kind.dynamo_fallback:
                    raise
                # the TorchScript-based exporter lacks some operators; torch.export's exporter has them from opset 18
                shapes = _dynamic_shapes(settings)
                opset = max(opset, 18)
                torch.onnx.export(
                    graph, (example,), str(path), dynamic_shapes=shapes, opset_version=opset, dynamo=True, **common
                )
        elif settings.format == "torchscript":
            scripted = torch.jit.script(graph) if kind.scripted else torch.jit.trace(graph, example)
            torch.jit.save(scripted, str(path))
        else:
            program = torch.export.export(graph, (example,), dynamic_shapes=_dynamic_shapes(settings))
            torch.export.save(program, str(path))


def _dynamic_shapes(settings: ExportSettings) -> dict[str, dict[int, Any]]:
    """torch.export's dynamic dimensions of the image: batch, and height and width unless the size is fixed."""
    dim = torch.export.Dim.DYNAMIC
    return {"image": {0: dim} if settings.input_size else {0: dim, 2: dim, 3: dim}}


def verify(
    graph: nn.Module,
    task: LightningModule,
    settings: ExportSettings,
    path: Path,
    images: Sequence[torch.Tensor] = (),
) -> list[dict[str, Any]]:
    """Run the exported file and the PyTorch graph on the sample images (``images``, else random); one entry each."""
    return compare_with_pytorch(
        graph,
        run_exported(settings.format, path),
        _samples(task, settings.verify_sizes, images),
        export_kind(task).output_names(settings),
        settings.semantic_output,
    )


def metadata(
    task: LightningModule, datamodule: LightningDataModule | None, settings: ExportSettings, ckpt_path: str | None
) -> dict[str, Any]:
    """What travels with the exported model."""
    kind = export_kind(task)
    data = data_description(datamodule)
    names = list((data.class_names if data is not None else None) or kind.context.class_names)
    palette = data_palette(datamodule)  # what lightseg predict writes into its mask PNGs
    class_colours = palette[: len(names)].tolist()
    channels = kind.context.in_channels
    info: dict[str, Any] = {
        "lightseg_version": lightseg.__version__,
        "task": type(task).__name__,
        "architecture": kind.context.arch,
        "backbone": kind.context.backbone,
        "format": settings.format,
        "num_classes": kind.context.num_classes,
        "class_names": names,
        "class_colors": class_colours,
        "palette": palette.tolist(),
        "input": {
            "name": "image",
            "layout": kind.layout if channels == 3 else f"[B,{channels},H,W]",
            "size": list(settings.input_size) if settings.input_size else "any",
            "dtype": "float32",
            "range": [0.0, 1.0],
            "channels": channels,
            "colour": "RGB" if channels == 3 else "the bands listed under bands, in this order",
            "bands": list(data.bands) if data is not None and data.bands else None,
            "normalisation": "inside the graph",
            "orientation": "as shown: turned by the image's EXIF orientation, as lightseg reads it",
        },
        "outputs": kind.output_names(settings),
        "checkpoint": str(ckpt_path) if ckpt_path else None,
        **kind.metadata(datamodule, settings),
        "not_in_graph": list(kind.not_in_graph),
    }
    return info


def export_task(
    task: LightningModule,
    datamodule: LightningDataModule | None,
    settings: ExportSettings,
    ckpt_path: str | None = None,
    config: dict[str, Any] | None = None,
) -> ExportResult:
    """Export ``task`` (with the weights of ``ckpt_path``, if given) as ``settings`` say; verify; write metadata.

    Raises :class:`~lightseg.errors.LightsegError` for an unsupported combination, an existing
    output without ``overwrite``, or a failed verification (no file is left then).
    """
    kind = export_kind(task)
    _check_exportable(kind, settings)
    path = settings.output
    if path.is_dir():
        raise LightsegError(
            f"{option('export', 'output')} {path} is a folder; give the file to write, e.g. {path / 'model.onnx'}"
        )
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise LightsegError(
            f"{option('export', 'output')} {path}: {blocking} is a file, not a folder; choose another path"
        )
    if path.exists() and not settings.overwrite:
        raise LightsegError(
            f"{path} exists; choose another {option('export', 'output')} or pass {option('export', 'overwrite')} true"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if ckpt_path:
        checkpoint = load_checkpoint(ckpt_path)
        task.on_load_checkpoint(checkpoint)
        task.load_state_dict(checkpoint["state_dict"])
    else:
        kind.prepare(datamodule)
    task.cpu().eval()
    graph = kind.graph(settings, datamodule).eval()
    # the format's suffix stays last: torch.export.load warns about any other name
    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        _write(graph, task, settings, partial)
        images = data_images(datamodule)
        figures = verify(graph, task, settings, partial, images)
        failed = [f for f in figures if not f["ok"]]
        if failed:
            raise LightsegError(
                f"the {settings.format} export differs from PyTorch on {len(failed)} of {len(figures)} sample images "
                f"(first: {json.dumps(failed[0])}); nothing was written"
            )
        info = metadata(task, datamodule, settings, ckpt_path)
        info["verification"] = figures
        info["verified_on"] = "validation images, resized" if images else "random images"
        if config is not None:
            info["config"] = config
        if settings.format == "onnx":
            _embed_onnx_metadata(partial, info)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    metadata_path = path.with_name(path.name + ".json")
    metadata_path.write_text(json.dumps(info, indent=2) + "\n")
    return ExportResult(path, metadata_path, figures, info["verified_on"])


def _embed_onnx_metadata(path: Path, info: dict[str, Any]) -> None:
    onnx = require("onnx")

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "lightseg", json.dumps(info)
    onnx.save(model, str(path))


def describe(result: ExportResult) -> str:
    """The lines ``lightseg export`` prints."""
    lines = [f"wrote {result.path} and {result.metadata_path}", f"verified against PyTorch on {result.verified_on}:"]
    for figure in result.verification:
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figure.items()
                          if k not in ("ok", "size"))  # fmt: skip
        lines.append(f"  {figure['size'][0]}x{figure['size'][1]}: {shown}")
    return "\n".join(lines)
