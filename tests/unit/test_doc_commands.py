"""The README's and docs' command lines that need no Docker engine or Pulumi CLI
run as written: render, impact, the commands' --help. Each is found in the text
(a `code span`), not restated here, so a doc that drifts from the code fails."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Commands that need neither an engine nor the Pulumi CLI; `make` ones run through
# their recipe with the venv's Python.
RUNNABLE = re.compile(r"^(?:\.venv/bin/)?python -m components\.(?:render|impact)\b|"
                      r"^make (?:render|impact)\b")
PLACEHOLDER = re.compile(r"\b(?:NEW|OLD|PATH=VALUE|DIR|FILE)\b|\[|\.\.\.")


def documented() -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for page in PAGES:
        for span in re.findall(r"`([^`\n]+)`", page.read_text()):
            if RUNNABLE.match(span) and not PLACEHOLDER.search(span):
                found.setdefault(span, page.name)
    return sorted(found.items())


def test_the_docs_name_commands_to_run():
    spans = [c for c, _ in documented()]
    assert any("components.tools.render" in c or c.startswith("make render") for c in spans), spans
    assert any(c.startswith("make impact") for c in spans), spans


@pytest.mark.parametrize("command, page", documented(), ids=lambda v: v)
def test_a_documented_command_runs_as_written(command, page, tmp_path):
    args = shlex.split(command)
    if args[0] == "make":
        # The recipe as make would run it, with a venv already there.
        run = subprocess.run(["make", "--no-print-directory", "-n", "-W", "requirements.txt",
                              "-o", "venv", "-o", ".venv/.installed", *args[1:]],
                             capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, run.stderr
        recipe = run.stdout.replace("\\\n", " ")  # continuation lines joined
        lines = [line for line in recipe.splitlines() if line.strip()]
        args = shlex.split(lines[-1].replace(".venv/bin/python", sys.executable))
    else:
        args = [sys.executable, *args[1:]]
    args = [str(tmp_path / "out") if a.startswith("out/") else a for a in args]
    run = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, f"{page}: {command}\n{run.stderr[-2000:]}"
    assert run.stdout.strip(), f"{page}: {command} printed nothing"


@pytest.mark.parametrize("module", ["components.tools.render", "components.tools.impact", "components.tools.doctor",
                                    "ops.backup", "ops.restore", "ops.schema_check",
                                    "tests.e2e.replay", "benchmarks"])
def test_every_documented_entry_point_answers_help(module):
    run = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0 and "usage:" in run.stdout, run.stderr
