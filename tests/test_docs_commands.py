"""Every ``lightseg`` command in the README and docs/ parses as written: its options, config files and values.

The quickstart's commands also run, as written, in ``test_quickstart.py`` (slow); the data
check's in ``test_data_check.py``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lightseg.cli import main
from lightseg.tune import SearchSpace, split_arguments

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: files a documented command reads that an earlier documented command writes
WRITTEN_BEFORE = {"crf.yaml": "trainer:\n  callbacks:\n    - class_path: lightseg.callbacks.DenseCRF\n"}


def documented_commands(page: Path) -> list[str]:
    """The ``lightseg`` command lines of the page's ``bash`` blocks (continuations joined, comments dropped)."""
    return documented_commands_of(page.read_text(encoding="utf-8"))


def multispectral_check() -> str:
    """docs/inference.md's data check of multispectral rasters (test_multispectral runs it as written)."""
    section = (ROOT / "docs" / "inference.md").read_text(encoding="utf-8").split("**Multispectral images.**")[1]
    return next(c for c in documented_commands_of(section) if c.startswith("lightseg data check"))


def documented_commands_of(text: str) -> list[str]:
    """The ``lightseg`` command lines of ``text``'s ``bash`` blocks."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # an environment variable for the command
                words.pop(0)
            if words[:1] == ["lightseg"]:
                found.append(shlex.join(words))
    return found


COMMANDS = sorted({(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in documented_commands(page)})


def test_the_pages_hold_the_commands_a_user_starts_with() -> None:
    readme = [c for page, c in COMMANDS if page == "README.md"]
    assert "lightseg fit --config configs/quickstart.yaml" in readme
    assert any(c.startswith("lightseg predict --config configs/quickstart.yaml --ckpt_path best") for c in readme)
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c[:70]}" for p, c in COMMANDS])
def test_documented_command_parses_as_written(
    page: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = shlex.split(command)[1:]
    if args[:2] == ["data", "check"]:
        # run as written by test_data_check (docs/datasets.md) and test_multispectral (docs/inference.md's
        # multispectral check): the other pages must say the same
        run = [*documented_commands(ROOT / "docs" / "datasets.md"), multispectral_check()]
        assert command in run, f"{page} shows a data check that no test runs as written"
        return
    monkeypatch.chdir(tmp_path)
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    for name, text in WRITTEN_BEFORE.items():
        (tmp_path / name).write_text(text)
    if args[:1] == ["tune"]:  # the study's options and its space file; the rest is what each trial's fit takes
        settings, fit_args = split_arguments(args[1:])
        assert settings.space is not None and SearchSpace.load(settings.space).parameters
        args = ["fit", *fit_args]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    out, err = capsys.readouterr()
    assert exit_info.value.code in (0, None), err
    assert "model:" in out and "trainer:" in out
    # every value the command sets is in the resolved config
    for option, value in zip(args, [*args[1:], ""], strict=True):
        if option.startswith("--") and option not in ("--config", "--ckpt_path") and not value.startswith("--"):
            key = option.lstrip("-").split("=")[0].rsplit(".", 1)[-1].removesuffix("+")
            assert re.search(rf"(?m)^\s*-?\s*{re.escape(key)}:", out) or key in ("callbacks", "model", "data"), key
