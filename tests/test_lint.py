"""Snakemake's own linter stays clean: rule files hold rules only (helpers live in
rules/common.smk or the library), every rule has a log, paths are composed without '+'."""

import subprocess
import sys

from workflow import ROOT


def test_snakemake_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(ROOT)], capture_output=True, text=True, timeout=300)
    lints = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Lints for")]
    assert not lints, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr
