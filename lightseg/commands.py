"""The ``lightseg`` commands in words: what each does, the versions line, the messages for a missing command.

Plain text and the standard library only: :mod:`lightseg.entry` prints these without importing
torch or Lightning, and the full CLI shows the same words.
"""

from __future__ import annotations

from importlib import metadata

#: every command and what it does (the Trainer methods' docstrings say the same; a test keeps them equal)
COMMANDS = {
    "fit": "Train the model on the data's train split, validating on its val split; checkpoints go into the run "
    "folder.",
    "validate": "Score a checkpoint on the validation split: per-class table, metrics beside the checkpoint.",
    "test": "Score a checkpoint on the test split: per-class table, per-image scores, metrics beside the checkpoint.",
    "predict": "Segment your images (--data.predict_dir) with a checkpoint: masks and overlays in "
    "--prediction.output_dir.",
    "export": "Export a checkpoint as ONNX, TorchScript or torch.export (--export.*), verified against PyTorch.",
    "tune": "Search a config's settings with Optuna (--tune.space SPACE.yaml): pruned, resumable, best.yaml at "
    "the end.",
    "data check": "Read every sample of a config's data set and report what it holds and what is wrong with it.",
    "data pack": "Write a config's data set as litdata chunks (--pack.output DIR or s3://...) for streaming.",
}
#: every lightseg command, for messages that list them
COMMAND_LIST = ", ".join(COMMANDS)
#: the first command of a newcomer, offered where a command line lacks a config
START = "; start from a config, e.g. `lightseg fit --config configs/quickstart.yaml` (trains offline in minutes)"
DESCRIPTION = (
    "lightseg: semantic, instance and keypoint segmentation on PyTorch Lightning, driven by YAML configs. "
    "Train with `lightseg fit --config CONFIG.yaml` (the quickstart: configs/quickstart.yaml), then test, predict "
    "with or export its checkpoints (--ckpt_path best | last | FILE). Commands: fit, validate, test, predict, "
    "export (below), `lightseg tune --config CONFIG.yaml --tune.space SPACE.yaml`, which searches the config's "
    "settings with Optuna, `lightseg data check --config CONFIG.yaml`, which reads every sample of the config's "
    "data and reports what is wrong with it, and `lightseg data pack`, which writes it as chunks to stream."
)
EPILOG = (
    "lightseg data check --config CONFIG.yaml reads every sample of the config's data set and reports what is "
    "wrong with it, lightseg data pack writes it as chunks to stream from a folder or an object store "
    "(lightseg data --help); lightseg tune searches a config's settings with Optuna "
    "(lightseg tune --help); lightseg export writes the trained model as ONNX, TorchScript or "
    "torch.export, verified against PyTorch (lightseg export --help)."
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def version_line() -> str:
    """``lightseg X (torch Y, torchvision Z, lightning W)``: what a bug report needs, read without importing them."""
    from lightseg import __version__

    return (
        f"lightseg {__version__} (torch {_version('torch')}, torchvision {_version('torchvision')}, "
        f"lightning {_version('lightning')})"
    )


def top_level_help() -> str:
    """What ``lightseg --help`` prints: the commands and how to start."""
    import textwrap

    width = 88
    lines = ["usage: lightseg [-h] [--version] {fit,validate,test,predict,export,tune,data check,data pack} ...", ""]
    lines += textwrap.wrap(DESCRIPTION, width)
    lines += ["", "commands:"]
    for name, what in COMMANDS.items():
        wrapped = textwrap.wrap(what, width - 16)
        lines.append(f"  {name:<13} {wrapped[0]}")
        lines += [f"  {'':<13} {rest}" for rest in wrapped[1:]]
    lines += [
        "",
        "options:",
        "  -h, --help    Show this help message and exit; `lightseg COMMAND --help` lists a command's options.",
        "  --version     Print versions and exit.",
    ]
    return "\n".join(lines)
