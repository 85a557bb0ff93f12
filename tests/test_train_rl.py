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
