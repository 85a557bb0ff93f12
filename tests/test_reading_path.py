"""The learner's path stays short: one default RLSP step reads in about 300 lines
(experiments/reading_path.py, the README's architecture section), and the default step never
enters the extensions' modules (PPO, the clipped objectives, DAPO)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reading_path(*flags):
    r = subprocess.run([sys.executable, "experiments/reading_path.py", *flags], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.slow
def test_default_step_reads_in_about_300_lines_and_skips_the_extensions():
    out = reading_path()
    n = int(re.search(r"reading path: (\d+) lines", out).group(1))
    assert n <= 320, out
    assert "reinforce_update" in out and "optimizer_step" in out and "score" in out, out
    assert "objectives.py" not in out and "ppo.py" not in out, out
    # the README states the measured count
    readme = open(os.path.join(ROOT, "README.md")).read()
    said = re.search(r"One default RLSP step, to read in this order \(about (\d+) lines", readme)
    assert said and abs(int(said.group(1)) - n) <= 10, (said and said.group(0), n)


@pytest.mark.slow
def test_ppo_step_goes_through_its_module():
    out = reading_path("--algo", "ppo")
    assert "ppo.py" in out and "reinforce_update" not in out, out
