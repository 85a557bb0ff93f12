"""A restructure changes no number: short SFT, default RL, PPO and LoRA runs log the figures
recorded in tests/figures.json (every logged figure but timings, at the same seed).

    python tests/test_figures.py --record     # rewrite tests/figures.json from the current code

Record only from code whose figures are known right (before a refactor, or after a change that
is meant to move them: say which in the commit). On the machine that recorded them the figures
are bit-identical; another CPU kind (AVX2 vs AVX-512) sums in another order, hence the 1e-5
relative tolerance (a sampled token flipped by a rounding difference would move a figure by far
more, and so would any real change).
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "tests", "figures.json")
SFT = ["--n_train", "300", "--n_val", "40", "--n_merges", "32", "--batch_size", "2", "--n_layer",
       "1", "--n_embd", "32", "--n_head", "2", "--n_kv_head", "1", "--eval_problems", "4",
       "--max_new_tokens", "24", "--log_interval", "2", "--warmup_steps", "2", "--max_steps", "20",
       "--eval_interval", "20"]
RL = ["--prompts_per_step", "4", "--n_samples", "4", "--max_new_tokens", "16", "--eval_problems",
      "4", "--log_samples", "2", "--max_steps", "3", "--eval_interval", "3"]
RUNS = {   # name -> (script, flags); the RL runs start from the SFT run
    "sft": ("train_sft.py", SFT),
    "rl": ("train_rl.py", RL),
    "ppo": ("train_rl.py", RL + ["--algo", "ppo"]),
    "lora": ("train_rl.py", RL + ["--lora_rank", "4", "--lr", "5e-4"]),
}
TIMINGS = {"tok_per_s", "elapsed_s", "t_gen", "t_score", "t_train"}


def run_all(tmp: str) -> dict:
    """{run name: [metrics.jsonl records without timings]}."""
    figures = {}
    for name, (script, flags) in RUNS.items():
        out = os.path.join(tmp, name)
        init = [] if name == "sft" else ["--init_from", os.path.join(tmp, "sft")]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, script, *flags, *init, "--out_dir", out], cwd=ROOT,
                           capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, f"{name}: {r.stderr[-2000:]}"
        figures[name] = [{k: v for k, v in json.loads(ln).items() if k not in TIMINGS}
                         for ln in open(os.path.join(out, "metrics.jsonl"))]
    return figures


def assert_same(got, want, where="figures"):
    """Equal structure, equal strings and ints, floats within 1e-5 relative (1e-7 absolute)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), \
            f"{where}: keys {sorted(set(got) ^ set(want)) if isinstance(got, dict) else got}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-5,
                                                              abs_tol=1e-7), \
            f"{where}: {got!r} != recorded {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != recorded {want!r}"


@pytest.mark.slow
def test_short_runs_log_the_recorded_figures(tmp_path):
    want = json.load(open(FIGURES))
    assert set(want) == set(RUNS)
    assert_same(run_all(str(tmp_path)), want)


def test_figures_differ_beyond_the_tolerance():
    """The comparison can fail: a changed loss, a missing key, another step count."""
    rec = [{"step": 1, "loss": 2.5, "behaviors": {"x": 0.25}}]
    assert_same([{"step": 1, "loss": 2.5 * (1 + 1e-7), "behaviors": {"x": 0.25}}], rec)
    for bad in ([{"step": 1, "loss": 2.5001, "behaviors": {"x": 0.25}}],
                [{"step": 1, "loss": 2.5, "behaviors": {}}],
                [{"step": 2, "loss": 2.5, "behaviors": {"x": 0.25}}],
                rec + rec):
        with pytest.raises(AssertionError):
            assert_same(bad, rec)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_figures.py --record")
    with tempfile.TemporaryDirectory() as tmp:
        figures = run_all(tmp)
    with open(FIGURES, "w") as f:
        json.dump(figures, f, indent=1)
        f.write("\n")
    print(f"wrote {FIGURES}: " + ", ".join(f"{k} {len(v)} records" for k, v in figures.items()))
