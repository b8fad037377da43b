"""The prepared device check runs here too: the same code on CPU at toy sizes, so that it is ready
(and not rotten) whenever a GPU machine is lent (bench/gpu_check.sh)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_path_on_cpu(tmp_path):
    report = tmp_path / "report.json"
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--smoke", "--arch", "tiny-vit",
         "--workers", "0", "1", "--images", "64", "--batch-size", "32", "--repeats", "1",
         "--json", str(report), "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(report.read_text())
    assert set(result["paths"]) == {"score", "embed", "train", "inpaint (LaMa, SD)", "str", "blip", "spot"}
    assert all(r["status"] == "ok" for r in result["paths"].values())
    assert result["paths"]["score"]["rank correlation fp32 vs bf16"] > 0.9
    assert set(result["throughput"]["img/s"]) == {"forward", "stage, 0 workers", "stage, 1 workers"}
    section = out.read_text()
    assert section.startswith("# Benchmarks") and "## GPU check" in section and "| str | ok |" in section


def test_gpu_check_scripts_parse():
    for script in ("gpu_check.sh", "gpu_wheels.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "bench" / script)], check=True)
