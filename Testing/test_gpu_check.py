"""benchmarks/gpu_check.py at tiny sizes on the CPU (``--smoke``): the check that a lent GPU runs must not
fail for a reason a CPU could have shown (device time is scarce: 15 minutes a session)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_stage_at_tiny_sizes_on_the_cpu(tmp_path):
    table = tmp_path / "gpu_check.md"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--table",
                           str(table)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table.read_text().splitlines()
    assert rows[:2] == ["| check | result | note |", "|---|---|---|"]
    assert not [r for r in rows if "FAILED" in r], done.stderr[-3000:]
    names = [r.split(" | ")[0].lstrip("| ") for r in rows[2:]]
    for start in ("bf16 matmul peak", "phantom", "starter inference", "features to the GPU", "Session.run",
                  "... adaptation on the CPU instead",
                  "M-Unet probability, GPU", "full run labels, GPU vs CPU", "training", "small-preset inference"):
        assert any(n.startswith(start) for n in names), (start, names)
    # On one device both sides of the GPU-vs-CPU rows are the CPU: their labels agree. (Sections one at a time
    # against on threads is not asserted bit for bit here: thread counts differ between machines.)
    labels_row = next(r for r in rows if r.startswith("| full run labels, GPU vs CPU"))
    assert float(labels_row.split("Dice ")[1].split(" ")[0]) >= 0.999
    assert any(r.startswith("| starter inference") and "outputs identical" in r for r in rows)
    # Five warm runs, each beside the same run with the adaptation on the CPU: here both are the CPU's.
    both = [r for r in rows if r.startswith("| ... adaptation on the CPU instead")]
    assert len(both) == 5 and all(float(r.split("Dice ")[1].split(";")[0]) >= 0.999 for r in both), both
