"""``lightseg data check``: build the config's data module, run :func:`~lightseg.data_check.check_data`, exit."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightseg.errors import LightsegError, class_count_mismatch, user_error

if TYPE_CHECKING:
    from lightseg.datamodules.base import BaseDataModule

CHECK_USAGE = """usage: lightseg data check --config CONFIG.yaml [--data.init_args.KEY VALUE ...] [--out FOLDER]
                           [--workers N] [--limit N] [--pictures N]

Reads every sample of every split of the config's data module and prints what it holds and what is
wrong with it; writes FOLDER/report.json and FOLDER/samples.png. It takes the command line of
`lightseg fit` as it is: model and trainer options are read and left aside, except the model's
num_classes, which must agree with the data.
Exit status: 0 no error found, 1 errors found, 2 a usage error.

  --config FILE        a lightseg config (or several, as for fit)
  --data.*             the data module and its arguments, as for fit
  --model.*, --trainer.*, --seed_everything, --ckpt_path, ...
                       accepted as fit takes them (not used, but num_classes)
  --out FOLDER         where report.json and samples.png go (default: runs/data_check)
  --workers N          reading threads (default: the CPU count, at most 8)
  --limit N            read only the first N samples of each split (default 0: all)
  --pictures N         samples per split in samples.png (default 4)
"""

PACK_USAGE = """usage: lightseg data pack --config CONFIG.yaml --pack.output DIR_OR_URL [--data.init_args.KEY VALUE ...]
                          [--pack.chunk_bytes SIZE] [--pack.workers N]

Writes the train, val and test splits of the config's data module (semantic, instance or keypoint)
as litdata chunks: images and masks as their files' bytes (labels a mask file does not hold as
they are, e.g. Cityscapes label ids or COCO polygons, as a lossless PNG of the labels). Train from
the pack with StreamingSegmentationDataModule or StreamingDetectionDataModule (source: DIR_OR_URL):
the data section to use is printed at the end. Needs pip install 'lightseg[stream]'.
Exit status: 0 packed, 1 the data cannot be packed, 2 a usage error.

  --config FILE            a lightseg config (or several, as for fit); model and trainer options are
                           read and left aside, as in lightseg data check
  --data.*                 the data module and its arguments, as for fit
  --pack.output DIR|URL    a new folder, or an object-store prefix litdata writes (s3://bucket/prefix)
  --pack.chunk_bytes SIZE  the size of a chunk (default 64MB)
  --pack.workers N         processes writing records (default 1)
"""

USAGE = f"""usage: lightseg data {{check,pack}} --config CONFIG.yaml ...

  check   read every sample of the config's data set; report what it holds and what is wrong
  pack    write the config's data set as litdata chunks, to stream from a folder or an object store

{CHECK_USAGE}
{PACK_USAGE}"""
#: each data command's usage
DATA_COMMANDS = {"check": CHECK_USAGE, "pack": PACK_USAGE}


def data_main(args: list[str]) -> None:
    """``lightseg data check|pack``: exits 0 (clean, packed), 1 (errors found) or 2 (usage error)."""
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if args else 2)
    command = args[0]
    if command not in DATA_COMMANDS:
        raise LightsegError(data_usage_error(command))
    if any(a in ("-h", "--help") for a in args[1:]):
        print(DATA_COMMANDS[command])
        raise SystemExit(0)
    if command == "pack":
        pack_main(args[1:])
        return
    # the readers and the report import torch: only once there is a data set to read
    from lightseg.data_check import check_data, unreadable_data
    from lightseg.data_check.report import format_report, write_report

    datamodule, options = _parse(args[1:], "check")
    if Path(options["out"]).exists() and not Path(options["out"]).is_dir():
        raise LightsegError(f"--out {options['out']} is a file; give a folder for report.json and samples.png")
    if isinstance(datamodule, tuple):  # the data set cannot be read at all: still a report, like any finding
        report = unreadable_data(*datamodule)
    else:
        report = check_data(datamodule, options["workers"], options["limit"], options["pictures"])
    print(format_report(report))
    json_path, png_path = write_report(report, Path(options["out"]))
    errors = len(report.errors)
    print(f"\nreport: {json_path}\npictures: {png_path}")
    if errors:
        print(f"lightseg data check: {errors} error{'s' if errors > 1 else ''} found", file=sys.stderr)
        raise SystemExit(1)


#: the options of each command; every other option of ``fit`` is read and left aside
OWN_OPTIONS = {"check": ("--data", "--out", "--workers", "--limit", "--pictures"), "pack": ("--data", "--pack")}


def _split_options(args: list[str], command: str) -> tuple[list[str], list[tuple[str, str]]]:
    """``(this command's arguments, the fit options left aside as (key, value))``; ``--config`` files are neither."""
    own: list[str] = []
    aside: list[tuple[str, str]] = []
    position = 0
    while position < len(args):
        arg = args[position]
        key, has_value, value = arg.partition("=")
        if not has_value and position + 1 < len(args) and not args[position + 1].startswith("--"):
            value = args[position + 1]
            step = 2
        else:
            step = 1
        if any(key == o or key.startswith(o + ".") for o in OWN_OPTIONS[command]) or not key.startswith("--"):
            own += args[position : position + step]
        elif key != "--config":  # the config files are read by check_config_files
            aside.append((key.removeprefix("--"), value))
        position += step
    return own, aside


def _model_num_classes(sections: list[dict[str, Any]], aside: list[tuple[str, str]]) -> int | None:
    """The model's ``num_classes`` where the configs or the command line set it (the last one wins)."""
    found: int | None = None
    for section in sections:
        model = section.get("model")
        if isinstance(model, dict):
            value = (model.get("init_args") or model).get("num_classes")
            found = int(value) if isinstance(value, int) else found
    for key, value in aside:
        if key in ("model.init_args.num_classes", "model.num_classes") and value.lstrip("-").isdigit():
            found = int(value)
    return found


def data_usage_error(command: str) -> str:
    """The message for ``lightseg data <command>`` with a command that is neither ``check`` nor ``pack``."""
    return (
        f"unknown command `lightseg data {command}`; the data commands are `lightseg data check` and "
        "`lightseg data pack`"
    )


def _parse(args: list[str], command: str) -> tuple[BaseDataModule | tuple[str, LightsegError], dict[str, Any]]:
    """The data module (or, where it cannot be made, its name and why) and this command's options."""
    from lightning.pytorch import LightningDataModule

    from lightseg.cli.config_files import CONFIG_FILES, check_config_files
    from lightseg.cli.flat_options import migrate_loaded, read_flat_options, rewrite_args
    from lightseg.cli.parser_errors import LightsegArgumentParser
    from lightseg.datamodules.base import BaseDataModule

    check_config_files(args)  # reads each --config file once, naming the file for what is wrong
    read_flat_options()  # the data settings' older flat spelling, as fit reads it
    CONFIG_FILES[:] = [(path, migrate_loaded(content)) for path, content in CONFIG_FILES]
    own, aside = _split_options(args, command)
    sections = [content for _, content in CONFIG_FILES]
    own = rewrite_args(own, sections)
    rest: list[str] = []
    for section in sections:
        if section.get("data") is not None:  # the config's data section; model and trainer are fit's
            rest += ["--data", json.dumps(section["data"])]
    rest += own
    parser = LightsegArgumentParser(prog=f"lightseg data {command}", allow_abbrev=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    if command == "check":
        parser.add_argument("--out", type=str, default="runs/data_check")
        parser.add_argument("--workers", type=int, default=0)
        parser.add_argument("--limit", type=int, default=0)
        parser.add_argument("--pictures", type=int, default=4)
        names: tuple[str, ...] = ("out", "workers", "limit", "pictures")
    else:
        parser.add_argument("--pack.output", type=str, required=True)
        parser.add_argument("--pack.chunk_bytes", type=str, default="64MB")
        parser.add_argument("--pack.workers", type=int, default=1)
        names = ("pack.output", "pack.chunk_bytes", "pack.workers")
    if not any(a == "--data" or a.startswith("--data") for a in rest):
        raise LightsegError(f"lightseg data {command} needs a data module: --config <file with a data: section>")
    if command == "pack" and not any(a.startswith("--pack.output") for a in rest):
        raise LightsegError("lightseg data pack needs --pack.output DIR_OR_URL: a new folder, or s3://bucket/prefix")
    config = parser.parse_args(rest)
    for key in ("workers", "limit", "pictures"):
        if key in config and config[key] < 0:
            raise LightsegError(f"--{key} must be >= 0, got {config[key]}")
    options = {k: config[k] for k in names}
    try:
        datamodule = parser.instantiate(config)["data"]
    except Exception as err:  # the data's own problem (a missing root, a bad class list): reported
        problem = user_error(err)
        if problem is None:
            raise
        return (str(config["data"]["class_path"]).rsplit(".", 1)[-1], problem), options
    if not isinstance(datamodule, BaseDataModule):
        raise LightsegError(f"lightseg data {command} reads lightseg data modules, not {type(datamodule).__name__}")
    model_classes = _model_num_classes(sections, aside)
    if model_classes is not None and model_classes != datamodule.num_classes:
        raise LightsegError(class_count_mismatch(model_classes, datamodule.num_classes, type(datamodule).__name__))
    return datamodule, options


def pack_main(args: list[str]) -> None:
    """``lightseg data pack``: write the config's data module as litdata chunks; print the data section to read them."""
    from lightseg.datamodules.packing import pack_datamodule

    datamodule, options = _parse(args, "pack")
    if isinstance(datamodule, tuple):  # the data set cannot be read at all
        raise datamodule[1]
    output = options["pack.output"]
    meta = pack_datamodule(datamodule, output, options["pack.chunk_bytes"], options["pack.workers"])
    print(f"packed {type(datamodule).__name__} into {output}:")
    for stage, entry in meta["stages"].items():
        where = f"{entry['folder']}/" + ("" if entry["folder"] == stage else f" (the {entry['folder']} split's)")
        print(f"  {stage:<6} {entry['count']:>8,} samples  {where}{_size(output, entry['folder'])}")
    for stage, why in meta["missing"].items():
        print(f"  {stage:<6} not packed: {why}")
    print("\ntrain and evaluate from it with this data section (in place of the config's):\n")
    print(streaming_section(datamodule, meta["kind"], output))


def _size(output: str, folder: str) -> str:
    """``  (N MB)``: the bytes of a local split's chunks (nothing for a URL)."""
    path = Path(output) / folder
    if not path.is_dir():
        return ""
    size = sum(f.stat().st_size for f in path.iterdir())
    return f"  ({size / 1e6:,.1f} MB)" if size >= 1e5 else f"  ({size / 1e3:,.1f} kB)"


def streaming_section(datamodule: BaseDataModule, kind: str, source: str) -> str:
    """The YAML ``data:`` section that reads the pack at ``source`` with ``datamodule``'s loader and augmentation."""
    import yaml

    init: dict[str, Any] = {"source": source}
    augmentation = datamodule.augmentation.as_dict() if datamodule.augmentation is not None else {}
    if kind == "semantic":
        name = "StreamingSegmentationDataModule"
        init["augmentation"] = augmentation
        if getattr(datamodule, "ignore_index", 255) != 255:
            init["ignore_index"] = datamodule.ignore_index  # type: ignore[attr-defined]
    else:
        name = "StreamingDetectionDataModule"
        init["augmentation"] = {"hflip": bool(augmentation.get("hflip", True))}
    init["loader"] = {"batch_size": datamodule.batch_size}
    section = {"data": {"class_path": f"lightseg.datamodules.{name}", "init_args": init}}
    return yaml.safe_dump(section, sort_keys=False).rstrip()
