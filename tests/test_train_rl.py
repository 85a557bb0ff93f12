"""train_rl.py end to end on a tiny random checkpoint: REINFORCE and PPO steps, logs, resume."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from data import get_task
from helpers import one_error_line
from nanorlsp.checkpoint import read_checkpoint, save_checkpoint
from nanorlsp.model import GPT, ModelConfig
from nanorlsp.tokenizer import build_tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--prompts_per_step", "2", "--n_samples", "2", "--max_new_tokens", "12",
         "--eval_problems", "4", "--log_samples", "1"]


def tiny_ckpt(d, n_embd=32):
    rows = get_task("arith").make_sft_examples(200, seed=0)
    tok = build_tiny_tokenizer((r["prompt"] + r["response"] for r in rows), n_merges=16)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64 * math.ceil(tok.n_vocab / 64), n_layer=1, n_head=2,
                            n_kv_head=1, n_embd=n_embd))
    save_checkpoint(str(d), model, tok, step=0, args={})
    return str(d)


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    return tiny_ckpt(tmp_path_factory.mktemp("sft"))


def run_rl(*args, check=True):
    r = subprocess.run([sys.executable, "train_rl.py", *SMALL, *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_rl_steps_log_and_checkpoint(sft, tmp_path, algo):
    d = str(tmp_path / algo)
    run_rl("--init_from", sft, "--out_dir", d, "--algo", algo, "--max_steps", "3",
           "--eval_interval", "3")
    ms = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    steps = [m for m in ms if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    for key in ("outcome", "explore", "repetition", "acc", "len_mean", "kl", "entropy",
                "clip_frac", "tok_per_s", "t_gen", "t_score", "t_train", "behaviors"):
        assert key in steps[0], key
    assert [m["step"] for m in ms if "val_acc" in m] == [0, 3]
    assert len(open(os.path.join(d, "samples.jsonl")).readlines()) == 3
    st = read_checkpoint(d)
    assert st["step"] == 3 and (st["value_head"] is not None) == (algo == "ppo")
    # the policy moved away from the reference
    ref = read_checkpoint(sft)["model"]
    assert any(not torch.equal(ref[k], st["model"][k]) for k in ref)
    # --resume extends the run
    run_rl("--out_dir", d, "--resume", "--max_steps", "4", "--init_from", sft)
    assert read_checkpoint(d)["step"] == 4


def test_rl_bad_inputs(sft, tmp_path):
    assert "holds no checkpoint" in one_error_line(
        run_rl("--init_from", sft, "--out_dir", str(tmp_path / "x"), "--resume", check=False))
    assert "invalid choice: 'sac'" in one_error_line(
        run_rl("--init_from", sft, "--algo", "sac", check=False))
    assert "no checkpoint or model" in one_error_line(
        run_rl("--init_from", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "y"),
               check=False))
    assert "--temperature must be > 0" in one_error_line(
        run_rl("--init_from", sft, "--temperature", "0", check=False))


@pytest.mark.slow
def test_rl_resume_with_another_config_is_refused(sft, tmp_path):
    d = str(tmp_path / "run")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0")
    other = tiny_ckpt(tmp_path / "other", n_embd=64)
    line = one_error_line(run_rl("--init_from", other, "--out_dir", d, "--resume", check=False))
    assert "another model config" in line


@pytest.mark.slow
def test_rl_resume_is_bit_exact(sft, tmp_path):
    """2 steps, stop, --resume to 4 == 4 steps straight: same weights and Adam state bit for bit
    (rollouts are a pure function of seed and step, the optimizer state is in the checkpoint)."""
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    common = ["--init_from", sft, "--eval_interval", "2", "--eval_problems", "0", "--lr", "3e-3"]
    run_rl(*common, "--out_dir", full, "--max_steps", "4")
    run_rl(*common, "--out_dir", half, "--max_steps", "2")
    run_rl(*common, "--out_dir", half, "--max_steps", "4", "--resume")
    a, b = read_checkpoint(full), read_checkpoint(half)
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    la = [json.loads(x) for x in open(os.path.join(full, "metrics.jsonl"))]
    lb = [json.loads(x) for x in open(os.path.join(half, "metrics.jsonl"))]
    assert [(m["step"], m["reward"]) for m in la] == [(m["step"], m["reward"]) for m in lb]


@pytest.mark.slow
def test_non_finite_loss_skips_then_stops(sft, tmp_path):
    """Fault injection: the REINFORCE loss is NaN at step 2 and from step 4 on. Step 2 is skipped
    and logged, the run goes on, and 3 bad steps in a row stop it with one clear line, the last
    checkpoint (step 3) intact."""
    d = str(tmp_path / "run")
    inject = (
        "import runpy, sys\n"
        "import nanorlsp.rl as rl\n"
        "orig, n = rl.reinforce_loss, [0]\n"
        "def bad(*a):\n"
        "    n[0] += 1\n"
        "    return orig(*a) * (float('nan') if n[0] == 2 or n[0] >= 4 else 1.0)\n"
        "rl.reinforce_loss = bad\n"
        "sys.argv = ['train_rl.py'] + sys.argv[1:]\n"
        "runpy.run_path('train_rl.py', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", inject, *SMALL, "--init_from", sft, "--out_dir", d,
                        "--max_steps", "10", "--eval_interval", "1", "--eval_problems", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: 3 non-finite steps in a row (last at step 6); the last checkpoint in {d} is intact")
    ms = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    assert [m["step"] for m in ms if "skipped" in m] == [2, 4, 5, 6]
    assert [m["step"] for m in ms if "reward" in m] == [1, 3]
    assert read_checkpoint(d)["step"] == 3


def test_rl_levels_curriculum(sft, tmp_path):
    """--levels 1 trains on one-digit facts only; a bad list is one error line."""
    d = str(tmp_path / "lv")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0",
           "--levels", "1", "--log_samples", "4")
    prompts = [json.loads(x)["prompt"] for x in open(os.path.join(d, "samples.jsonl"))]
    assert prompts and all(len(p.split()[2]) == 1 and len(p.split()[4].rstrip("?")) == 1
                           for p in prompts), prompts
    assert "--levels 7" in one_error_line(run_rl("--init_from", sft, "--levels", "7",
                                                 "--out_dir", str(tmp_path / "x"), check=False))


@pytest.mark.slow
def test_rl_bf16_on_cpu(sft, tmp_path):
    """--dtype bfloat16 on CPU: rollouts on a bf16 copy refreshed every step, bf16 reference,
    autocast update; the metrics are finite and the checkpoint keeps float32 master weights."""
    d = str(tmp_path / "bf16")
    run_rl("--init_from", sft, "--out_dir", d, "--algo", "ppo", "--max_steps", "2",
           "--eval_interval", "2", "--dtype", "bfloat16")
    steps = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    steps = [m for m in steps if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert all(math.isfinite(m[k]) for m in steps for k in ("reward", "kl", "entropy", "loss"))
    st = read_checkpoint(d)
    assert all(v.dtype == torch.float32 for v in st["model"].values() if v.is_floating_point())
    ref = read_checkpoint(sft)["model"]
    assert any(not torch.equal(ref[k], st["model"][k]) for k in ref)


def test_rl_adaptive_schedule(sft, tmp_path):
    """--explore_schedule adaptive runs and logs the share of rows whose length was charged."""
    d = str(tmp_path / "adaptive")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "2", "--eval_problems", "0",
           "--explore_schedule", "adaptive", "--acc_threshold", "0.5")
    steps = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    assert [0 <= m["easy_frac"] <= 1 for m in steps if "reward" in m] == [True, True]
    bad = run_rl("--init_from", sft, "--out_dir", str(tmp_path / "bad"), "--explore_schedule",
                 "adaptive", "--explore_reward", "cosine", check=False)
    assert bad.returncode == 1 and "adaptive" in bad.stderr.strip().splitlines()[-1]
