"""Every command in the docs' bash blocks runs as written.

`snakemake` commands are parsed by Snakemake's own command line (a multi-value option such as
``--set-resources`` swallows a target typed after it: that is an error there, or a target lost)
and then run as a dry run (``-n`` added) against the tiny config, with the profile they name, in a
folder laid out as a checkout. Other commands: the block passes ``bash -n`` and every program and
repository file a command names exists.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from workflow import ROOT, tiny_config, write_config

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
# Checkout entries a command may need: the workflow, its profiles, and the environment.
CHECKOUT = ("Snakefile", "rules", "scripts", "schemas", "envs", "report", "profiles", "slurm", "src", "setup.sh",
            "tests", "bench", "configs", "requirements.txt", "pyproject.toml")
BUILTINS = {"cd", "source", ".", "export", "set", "echo"}
# Slurm's client programs: present where Slurm is (CI installs it for tests/test_slurm.py).
SLURM_TOOLS = {"srun", "scontrol", "sbatch", "squeue", "sinfo", "sacct"}
# Snakemake cannot reach a conda it does not find: on a machine without conda (this one, CI) a
# command that deploys with conda is checked by the parser only.
HAS_CONDA = shutil.which("conda") is not None


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def bash_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of every ```bash block of a markdown file."""
    blocks, current, start, lang = [], None, 0, ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence and current is None:
            current, start, lang = [], n + 1, fence.group(1)
        elif fence:
            if lang in ("bash", "sh", "shell"):
                blocks.append((start, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def commands(path: Path) -> list[Command]:
    """The commands of a file's bash blocks, continuation lines joined (comments stay in the
    text; :func:`segments` drops them)."""
    out = []
    for start, block in bash_blocks(path):
        pending, first = "", 0
        for n, line in enumerate(block.splitlines(), start):
            first = first or n
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text, pending = (pending + line).strip(), ""
            if segments(text):
                out.append(Command(str(path.relative_to(ROOT)), first, text))
            first = 0
    return out


def segments(text: str) -> list[list[str]]:
    """The simple commands of a line (split at ``&&``, ``||``, ``;``, ``|`` and command
    substitutions), redirections and leading variable assignments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)  # '#' starts a comment
    lexer.whitespace_split = True
    parts, current, skip = [], [], False
    for token in lexer:
        if token in ("&&", "||", ";", "|", "(", ")"):
            parts.append(current)
            current = []
        elif not current and re.match(r"^\w+=", token):
            continue
        elif token in (">", ">>", "<"):
            skip = True
        elif skip:
            skip = False
        else:
            current.append(token)
    parts.append(current)
    return [p for p in parts if p]


ALL = [c for doc in DOCS for c in commands(doc)]
SNAKEMAKE = [c for c in ALL if any(s[0] == "snakemake" for s in segments(c.text))]


def snakemake_args(command: Command) -> list[str]:
    return next(s[1:] for s in segments(command.text) if s[0] == "snakemake")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A folder laid out as a checkout whose config.yaml is the tiny config, nothing built."""
    work = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT:
        (work / name).symlink_to(ROOT / name)
    write_config(work, tiny_config())
    return work


def test_the_docs_have_commands():
    assert len(SNAKEMAKE) >= 10 and any("--set-resources" in c.text for c in SNAKEMAKE)


@pytest.mark.parametrize("command", SNAKEMAKE, ids=str)
def test_snakemake_commands_parse_with_their_targets(command, checkout, monkeypatch):
    """Snakemake's own parser takes the command, with every target a target (not an option value)."""
    from snakemake.cli import parse_args

    monkeypatch.chdir(checkout)  # profiles are found from the working directory
    args = snakemake_args(command)
    _, parsed = parse_args(args)
    targets = [a for a in args if a.startswith("results/")]
    assert list(parsed.targets or []) == targets, f"{command}: targets read as {parsed.targets}"


@pytest.mark.parametrize("command", SNAKEMAKE, ids=str)
def test_snakemake_commands_dry_run_on_the_tiny_config(command, checkout):
    args = snakemake_args(command)
    if "conda" in args and not HAS_CONDA:
        pytest.skip("deploys with conda, which this machine lacks: checked by the parser only")
    if "--unlock" not in args and "-n" not in args and "--dry-run" not in args:
        args = ["-n", *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["snakemake", *args], cwd=checkout, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_bash_blocks_are_valid_bash(doc):
    for start, block in bash_blocks(doc):
        proc = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert proc.returncode == 0, f"{doc.name}:{start}: {proc.stderr}"


@pytest.mark.parametrize("command", [c for c in ALL if c not in SNAKEMAKE], ids=str)
def test_other_commands_name_programs_and_files_that_exist(command):
    for words in segments(command.text):
        program = words[0]
        if program in BUILTINS or program in SLURM_TOOLS and not shutil.which("sbatch"):
            continue
        found = shutil.which(program, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        assert found or (ROOT / program).exists() or program == ".venv/bin/python", f"{command}: no program {program}"
        for word in words[1:]:
            if not word.startswith("-") and ("/" in word or word.endswith((".sh", ".py"))):
                assert (ROOT / word).exists(), f"{command}: no file {word}"
