"""The first keystroke: --help, --version, data check --help, a mistyped command: answered without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lightseg.cli.trainer import LightsegTrainer
from lightseg.commands import COMMANDS, DESCRIPTION

PROBE = """
import json, sys
from lightseg.entry import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    status = done.code
heavy = sorted(m for m in ("torch", "lightning", "torchvision", "segmentation_models_pytorch") if m in sys.modules)
print(json.dumps({"status": status, "heavy": heavy}), file=sys.stderr)
"""


def _answer(*args: str) -> tuple[int, str, str, list[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, check=False)
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    err = "\n".join(done.stderr.strip().splitlines()[:-1])
    return probe["status"], done.stdout, err, probe["heavy"]


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [(["--version"], 0, ["lightseg 0.1.0 (torch ", "lightning "]),
     (["--help"], 0, ["commands:", "data check", "export", "configs/quickstart.yaml"]),
     (["data", "check", "--help"], 0, ["usage: lightseg data check --config CONFIG.yaml"]),
     (["data"], 2, ["usage: lightseg data check"]),
     (["data", "pack", "--help"], 0, ["usage: lightseg data pack --config CONFIG.yaml --pack.output DIR_OR_URL"]),
     (["tune", "--config", "x.yaml", "--help"], 0, ["usage: lightseg tune --config CONFIG.yaml", "--tune.n_trials"]),
     (["data", "inspect"], 2, ["the data commands are `lightseg data check` and `lightseg data pack`"]),
     (["fitt", "--config", "x.yaml"], 2, ["unknown command 'fitt' (did you mean `lightseg fit`?)"]),
     ([], 2, ["no command given", "lightseg fit --config configs/quickstart.yaml"])],
    ids=["version", "help", "data check help", "data", "data pack help", "tune help", "data inspect", "misspelt",
         "nothing"],
)  # fmt: skip
def test_answered_without_importing_the_model_libraries(args: list[str], status: int, words: list[str]) -> None:
    code, out, err, heavy = _answer(*args)
    assert code == status, (out, err)
    assert heavy == []  # nothing of torch, Lightning, torchvision or smp was imported
    for word in words:
        assert word in out + err, (out, err)


def test_the_quick_help_says_what_the_full_cli_says() -> None:
    for name in ("fit", "validate", "test", "predict", "export"):
        first_line = (getattr(LightsegTrainer, name).__doc__ or "").strip().splitlines()[0]
        assert COMMANDS[name] == first_line, name
    assert "data check" in COMMANDS and "data check" in DESCRIPTION
