"""The README and docs/reference.md show only commands that work: every ``make`` goal is a target of
the Makefile, every ``EXP=`` an experiment that ``tests/test_experiments.py`` runs end to end (with
its ``SET=`` overrides valid keys of that experiment), every ``python -m pipeline`` command a
command whose options it names exist; and the README's first screen is the two set-up commands."""

from __future__ import annotations

import argparse
import glob
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "reference.md"]
# variables make or an experiment reads (a `${VAR}` of its config), besides the Makefile's own
CONFIG_VARS = {"DERM7PT_ROOT", "RETINOPATHY_ROOT", "ISIC2016_ROOT", "ISIC2020_ROOT", "VGGM_WEIGHTS"}


def shown_commands(text: str) -> list[str]:
    """Every ``make ...`` and ``python -m pipeline ...`` command of a markdown text: the lines of
    its fenced blocks (continuations joined, comments cut) and its inline code spans; in a
    ``for f in GLOB; do ...; done`` loop ``$f`` is the glob."""
    lines = []
    for block in re.findall(r"^ *```(?:bash|sh)?\n(.*?)^ *```", text, re.S | re.M):
        lines += [line.split(" #", 1)[0].strip()
                  for line in block.replace("\\\n", " ").splitlines()]
    lines += re.findall(r"`([^`\n]+)`", text)
    commands = []
    for line in lines:
        loop = re.match(r"for (\w+) in (\S+); do (.*); done", line)
        if loop:
            line = loop.group(3).replace(f"${loop.group(1)}", loop.group(2))
        for part in re.split(r"\s*(?:;|&&)\s*", line):
            if part.startswith(("make ", "python -m pipeline ")):
                commands.append(part)
    return commands


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))


def test_the_readme_starts_with_the_two_set_up_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first and text.index("```bash") < text.index("\n## "), "no command block first"
    lines = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert lines == ["make demo", "make test"]
    # what each produces and how long it takes, before the first section
    screen = text[:text.index("\n## ")]
    assert "experiments/demo/report.md" in screen and re.search(r"about \d+ min", screen)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_make_command_shown_names_real_targets_and_experiments(doc, monkeypatch):
    from pipeline.experiment.config import load_config

    commands = [c for c in shown_commands(doc.read_text(encoding="utf-8"))
                if c.split()[0] == "make"]
    assert commands, f"no make command found in {doc.name}"
    targets = make_targets()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for var in CONFIG_VARS:
        monkeypatch.setenv(var, "/data/x")
    monkeypatch.chdir(ROOT)
    for command in commands:
        words = shlex.split(command)[1:]
        sets, exps = [], []
        for word in words:
            if word.startswith("-"):
                continue
            if "=" in word:
                name, value = word.split("=", 1)
                assert name in CONFIG_VARS or re.search(rf"\b{name}\b", makefile), (doc, command)
                if name == "EXP":
                    exps.append(value)
                elif name == "SET":
                    sets = value.split()
                continue
            assert word in targets, f"{doc.name}: `{command}`: make has no target {word!r}"
        for exp in exps:
            matches = glob.glob(exp) if "*" in exp else [exp]
            assert matches and all(Path(m).is_file() for m in matches), (doc.name, command)
            for match in matches:
                if sets and "..." not in exp:
                    load_config(match, sets)  # raises on an unknown key or a bad value


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_pipeline_command_shown_exists_with_the_options_it_names(doc):
    from pipeline.cli import COMMANDS

    commands = [c for c in shown_commands(doc.read_text(encoding="utf-8"))
                if c.startswith("python -m pipeline ")]
    assert commands, f"no pipeline command found in {doc.name}"
    for command in commands:
        name = command.split()[3]
        if name.isupper():
            continue  # a placeholder: `python -m pipeline COMMAND --help`
        assert name in COMMANDS, f"{doc.name}: `{command}`: no command {name!r}"
        parser = argparse.ArgumentParser()
        importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
        options = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", parser.format_help()))
        for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", command):
            assert option in options, f"{doc.name}: `{command}`: {name} has no option {option}"


def test_every_shipped_experiment_the_readme_runs_is_run_end_to_end():
    import test_experiments

    shown = set()
    for command in shown_commands((ROOT / "README.md").read_text(encoding="utf-8")):
        for exp in re.findall(r"EXP=(\S+)", command):
            shown |= {Path(m).stem for m in glob.glob(str(ROOT / exp))}
    run = {name for name, _, _ in test_experiments.EXPECTED}
    assert shown and shown <= run, shown - run
