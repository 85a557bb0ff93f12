"""
torchrun on CPU (gloo): 2 processes must equal 1 process on the same global batch, for
train_rl.py (REINFORCE and PPO) and train_sft.py (with gradient accumulation); a killed rank
takes the whole job down (no hang); a batch that does not split over the ranks is one error line.
Each run is a few seconds; 2 processes on a 2-core box.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from test_train_rl import ROOT, tiny_ckpt

RL = ["--prompts_per_step", "4", "--n_samples", "2", "--max_new_tokens", "12",
      "--eval_problems", "6", "--log_samples", "2", "--lr", "3e-3", "--max_steps", "3",
      "--eval_interval", "3"]
SFT = ["--n_train", "300", "--n_val", "20", "--eval_problems", "6", "--max_steps", "6",
       "--eval_interval", "6", "--log_interval", "3", "--n_layer", "1", "--n_embd", "32",
       "--n_head", "2", "--n_kv_head", "1", "--batch_size", "4", "--grad_accum", "2",
       "--n_merges", "16", "--max_new_tokens", "16", "--warmup_steps", "0", "--lr", "1e-2"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def run(cmd, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    return tiny_ckpt(tmp_path_factory.mktemp("sft"))


def weights(d):
    return torch.load(os.path.join(d, "ckpt.pt"), weights_only=True)


def metrics(d):
    return [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]


def assert_same_run(one, two, start, keys):
    """Same weights (float tolerance: the all-reduce sums in another order), same logged
    figures, and the weights really moved (so equality is not vacuous)."""
    a, b = weights(one), weights(two)
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4), k
    moved = max((a["model"][k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3
    ma, mb = metrics(one), metrics(two)
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x, y in zip(ma, mb):
        for k in keys:
            if k in x:
                assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), (x["step"], k)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_rl_two_ranks_equal_one(sft, tmp_path, algo):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    args = ["train_rl.py", *RL, "--init_from", sft, "--algo", algo]
    r1 = run([sys.executable, *args, "--out_dir", one])
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run([*TORCHRUN, *args, "--out_dir", two])
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "Traceback" not in r2.stderr
    assert_same_run(one, two, weights(sft)["model"],
                    ["reward", "outcome", "explore", "repetition", "acc", "len_mean", "kl",
                     "entropy", "clip_frac", "loss", "val_acc", "val_mean_tokens"])
    # the same transcripts, from rows sampled on different ranks
    s1 = open(os.path.join(one, "samples.jsonl")).read()
    assert s1 == open(os.path.join(two, "samples.jsonl")).read()
    if algo == "ppo":
        va, vb = weights(one)["value_head"], weights(two)["value_head"]
        assert all(torch.allclose(va[k], vb[k], atol=1e-5) for k in va)


@pytest.mark.slow
def test_sft_two_ranks_equal_one(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    r1 = run([sys.executable, "train_sft.py", *SFT, "--out_dir", one])
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run([*TORCHRUN, "train_sft.py", *SFT, "--out_dir", two])
    assert r2.returncode == 0, r2.stderr[-3000:]
    # the initial weights: the same seeded init the script draws
    from nanorlsp.model import GPT, ModelConfig
    cfg = ModelConfig(**weights(one)["model_config"])
    torch.manual_seed(1337)
    start = GPT(cfg).state_dict()
    assert_same_run(one, two, start, ["loss", "grad_norm", "val_loss", "val_acc"])


@pytest.mark.slow
def test_killed_rank_takes_the_job_down(sft, tmp_path):
    """SIGKILL rank 1 mid-run: torchrun stops rank 0 (blocked in a collective) and exits
    non-zero naming the failed rank; the last checkpoint stays loadable."""
    out = str(tmp_path / "run")
    cmd = [*TORCHRUN, "train_rl.py", *RL, "--init_from", sft, "--out_dir", out,
           "--max_steps", "100000", "--eval_interval", "2", "--eval_problems", "0"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(out, "ckpt.pt")):
            assert time.time() < deadline and p.poll() is None, "run did not start"
            time.sleep(0.2)
        victim = None
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"RANK=1" in env and b"train_rl.py" in cmdline and out.encode() in cmdline:
                victim = int(pid)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, err = p.communicate(timeout=120)   # no hang: the agent tears rank 0 down
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    assert "train_rl.py FAILED" in err and "rank" in err and "SIGKILL" in err
    assert weights(out)["step"] >= 2


def test_batch_must_split_over_ranks(sft, tmp_path):
    r = run([*TORCHRUN, "train_rl.py", *RL, "--init_from", sft, "--out_dir", str(tmp_path / "x"),
             "--prompts_per_step", "3"])
    assert r.returncode != 0
    assert "error: --prompts_per_step 3 must be a multiple of ranks = 2" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_rl_fsdp_equals_one_process(sft, tmp_path, algo):
    """FSDP2 over 2 gloo ranks (+ activation checkpointing) == 1 process with gradient
    accumulation on the same global batch; then the FSDP checkpoint resumes."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    args = ["train_rl.py", *RL, "--init_from", sft, "--algo", algo]
    r1 = run([sys.executable, *args, "--out_dir", one, "--grad_accum", "2"])
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run([*TORCHRUN, *args, "--out_dir", two, "--fsdp", "--act_ckpt"])
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert_same_run(one, two, weights(sft)["model"], ["reward", "acc", "kl", "entropy", "loss"])
    assert weights(two)["optimizer"]["fsdp_full"]
    r3 = run([*TORCHRUN, *args, "--out_dir", two, "--fsdp", "--resume", "--max_steps", "4"])
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert weights(two)["step"] == 4
    # --resume restores the run's own settings, --fsdp included, even when not typed again
    if algo == "reinforce":
        r4 = run([*TORCHRUN, *args, "--out_dir", two, "--resume", "--max_steps", "5"])
        assert r4.returncode == 0, r4.stderr[-3000:]
        assert weights(two)["step"] == 5 and weights(two)["optimizer"]["fsdp_full"]


@pytest.mark.slow
def test_sft_fsdp_equals_one_process(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    r1 = run([sys.executable, "train_sft.py", *SFT, "--out_dir", one])
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run([*TORCHRUN, "train_sft.py", *SFT, "--out_dir", two, "--fsdp", "--act_ckpt"])
    assert r2.returncode == 0, r2.stderr[-3000:]
    from nanorlsp.model import GPT, ModelConfig
    torch.manual_seed(1337)
    start = GPT(ModelConfig(**weights(one)["model_config"])).state_dict()
    assert_same_run(one, two, start, ["loss", "grad_norm", "val_loss", "val_acc"])


def test_fsdp_needs_torchrun(sft, tmp_path):
    r = run([sys.executable, "train_rl.py", *RL, "--init_from", sft, "--fsdp",
             "--out_dir", str(tmp_path / "x")])
    assert r.returncode != 0 and r.stderr.strip() == (
        "error: --fsdp shards over torchrun ranks: run it under torchrun --nproc_per_node=N (N > 1)")
