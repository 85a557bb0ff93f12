"""
torchrun on CPU (gloo): 2 processes must equal 1 process on the same global batch, for
train_rl.py (REINFORCE and PPO) and train_sft.py (with gradient accumulation); a killed rank
takes the whole job down (no hang); a batch that does not split over the ranks is one error line.
Each run is a few seconds; 2 processes on a 2-core box.

The SFT and RL equivalence runs go through tests/run_adam_eps.py (AdamW's eps 1e-3 instead of 1e-8; it says why):
with eps 1e-8, 6 Adam steps at lr 1e-2 turn the all-reduce's other summation order into weight
differences of 5e-6 to 2e-5, depending on the CPU and the data (test_sft_two_ranks_equal_one and
test_sft_fsdp_equals_one_process failed on an AMX Xeon at 1.7e-5 against atol 1e-5); with eps
1e-3 they are ~4e-8. So the SFT tolerance can be 1e-6, and what it buys is shown by
test_sft_equivalence_catches_a_broken_rank: a rank's gradient dropped, counted twice, or summed
instead of averaged moves the weights 4.6e3 to 4e4 x further than that, and step 1's grad_norm
(before any Adam step) is off by 39-100%. The RL runs (lr 3e-3: slope 3e5 with eps 1e-8) are
exposed the same way and use the same wrapper and weight tolerance.
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
       "--eval_interval", "6", "--log_interval", "1", "--n_layer", "1", "--n_embd", "32",
       "--n_head", "2", "--n_kv_head", "1", "--batch_size", "4", "--grad_accum", "2",
       "--n_merges", "16", "--max_new_tokens", "16", "--warmup_steps", "0", "--lr", "1e-2"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# the equivalence runs, SFT and RL (see the module docstring): measured max |diff| 4e-8 in the weights
# (1.2e-7 with another CPU's summation noise emulated, see tests/run_adam_eps.py) and 1.1e-7
# (relative) in the logged figures: 8 and 90 x below these tolerances
ADAM = os.path.join(ROOT, "tests", "run_adam_eps.py")
ADAM_EPS = "1e-3"
SFT_ATOL, SFT_REL = 1e-6, 1e-5
sft_tol = dict(atol=SFT_ATOL, rtol=0, m_rel=SFT_REL, m_abs=0)


def run(cmd, timeout=300, **env):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    return tiny_ckpt(tmp_path_factory.mktemp("sft"))


def weights(d):
    return torch.load(os.path.join(d, "ckpt.pt"), weights_only=True)


def metrics(d):
    return [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]


def assert_same_run(one, two, start, keys, atol=1e-5, rtol=1e-4, m_rel=1e-4, m_abs=1e-6):
    """Same weights (float tolerance: the all-reduce sums in another order), same logged
    figures, and the weights really moved (so equality is not vacuous). atol / rtol: the
    weights', m_rel / m_abs: the logged figures'. The SFT runs pass sft_tol, the RL runs (also
    eps 1e-3: max |diff| 4e-9 REINFORCE, 1.2e-7 PPO, moved 5e-3 / 3e-2) atol 1e-6."""
    a, b = weights(one), weights(two)
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=atol, rtol=rtol), k
    moved = max((a["model"][k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3
    ma, mb = metrics(one), metrics(two)
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x, y in zip(ma, mb):
        for k in keys:
            if k in x:
                assert x[k] == pytest.approx(y[k], rel=m_rel, abs=m_abs), (x["step"], k)


SFT_KEYS = ["loss", "grad_norm", "val_loss", "val_acc"]


def run_sft(out, *flags, **env):
    """torchrun train_sft.py on 2 ranks with AdamW's eps at ADAM_EPS (tests/run_adam_eps.py)."""
    r = run([*TORCHRUN, ADAM, "train_sft.py", *SFT, "--out_dir", out, *flags],
            ADAM_EPS=ADAM_EPS, **env)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def sft_one(tmp_path_factory):
    """The one-process SFT run (eps 1e-3) that the 2-rank runs (DDP, FSDP, broken) are held to."""
    one = str(tmp_path_factory.mktemp("sft_one"))
    r = run([sys.executable, ADAM, "train_sft.py", *SFT, "--out_dir", one], ADAM_EPS=ADAM_EPS)
    assert r.returncode == 0, r.stderr[-2000:]
    groups = weights(one)["optimizer"]["param_groups"]
    assert all(g["eps"] == float(ADAM_EPS) for g in groups)  # the wrapper took effect
    return one


def sft_start(one):
    """The initial weights: the same seeded init the script draws."""
    from nanorlsp.model import GPT, ModelConfig
    torch.manual_seed(1337)
    return GPT(ModelConfig(**weights(one)["model_config"])).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_rl_two_ranks_equal_one(sft, tmp_path, algo):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    args = [ADAM, "train_rl.py", *RL, "--init_from", sft, "--algo", algo]
    r1 = run([sys.executable, *args, "--out_dir", one], ADAM_EPS=ADAM_EPS)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run([*TORCHRUN, *args, "--out_dir", two], ADAM_EPS=ADAM_EPS)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "Traceback" not in r2.stderr
    assert_same_run(one, two, weights(sft)["model"],
                    ["reward", "outcome", "explore", "repetition", "acc", "len_mean", "kl",
                     "entropy", "clip_frac", "loss", "grad_norm", "val_acc", "val_mean_tokens"],
                    atol=SFT_ATOL, rtol=0)
    # the same transcripts, from rows sampled on different ranks
    s1 = open(os.path.join(one, "samples.jsonl")).read()
    assert s1 == open(os.path.join(two, "samples.jsonl")).read()
    if algo == "ppo":
        va, vb = weights(one)["value_head"], weights(two)["value_head"]
        assert all(torch.allclose(va[k], vb[k], atol=1e-5) for k in va)


@pytest.mark.slow
def test_sft_two_ranks_equal_one(sft_one, tmp_path):
    two = str(tmp_path / "two")
    run_sft(two)
    assert_same_run(sft_one, two, sft_start(sft_one), SFT_KEYS, **sft_tol)


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
    args = [ADAM, "train_rl.py", *RL, "--init_from", sft, "--algo", algo]
    r1 = run([sys.executable, *args, "--out_dir", one, "--grad_accum", "2"], ADAM_EPS=ADAM_EPS)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run([*TORCHRUN, *args, "--out_dir", two, "--fsdp", "--act_ckpt"], ADAM_EPS=ADAM_EPS)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert_same_run(one, two, weights(sft)["model"], ["reward", "acc", "kl", "entropy", "loss"],
                    atol=SFT_ATOL, rtol=0)
    assert weights(two)["optimizer"]["fsdp_full"]
    r3 = run([*TORCHRUN, *args, "--out_dir", two, "--fsdp", "--resume", "--max_steps", "4"],
             ADAM_EPS=ADAM_EPS)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert weights(two)["step"] == 4
    # --resume restores the run's own settings, --fsdp included, even when not typed again
    if algo == "reinforce":
        r4 = run([*TORCHRUN, *args, "--out_dir", two, "--resume", "--max_steps", "5"],
                 ADAM_EPS=ADAM_EPS)
        assert r4.returncode == 0, r4.stderr[-3000:]
        assert weights(two)["step"] == 5 and weights(two)["optimizer"]["fsdp_full"]


@pytest.mark.slow
def test_sft_fsdp_equals_one_process(sft_one, tmp_path):
    two = str(tmp_path / "two")
    run_sft(two, "--fsdp", "--act_ckpt")
    assert_same_run(sft_one, two, sft_start(sft_one), SFT_KEYS, **sft_tol)


@pytest.mark.slow
@pytest.mark.parametrize("fault,flags", [("drop", []), ("double", ["--fsdp", "--act_ckpt"]),
                                         ("sum", [])])
def test_sft_equivalence_catches_a_broken_rank(sft_one, tmp_path, fault, flags):
    """The SFT tolerance is tight enough to see a sharding error. The same train_sft.py under
    torchrun with rank 1's gradient dropped (DDP), rank 0's counted twice (FSDP), or both ranks'
    summed instead of averaged (DDP): the weights land >1e3 x SFT_ATOL away (measured 4e-2,
    2.3e-2, 4.6e-3), and step 1's grad_norm, before any Adam step could amplify anything, is off
    by more than 20% (measured 39%, 59%, 100%). The loss of step 1 still agrees: the fault is in
    the gradient only, as a sharding bug in backward would be."""
    two = str(tmp_path / "two")
    run_sft(two, *flags, FAULT=fault)
    a, b = weights(sft_one)["model"], weights(two)["model"]
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    assert gap > 1e3 * SFT_ATOL, gap
    first_one, first_two = metrics(sft_one)[0], metrics(two)[0]
    assert first_one["step"] == first_two["step"] == 1
    assert first_two["loss"] == pytest.approx(first_one["loss"], rel=SFT_REL)
    assert abs(first_two["grad_norm"] / first_one["grad_norm"] - 1) > 0.2
    with pytest.raises(AssertionError):  # and so the equivalence tests above would fail
        assert_same_run(sft_one, two, sft_start(sft_one), SFT_KEYS, **sft_tol)


FSDP_VALUE_HEAD = """
import sys
import torch
import torch.nn as nn
from nanorlsp import dist
from nanorlsp.model import GPT, ModelConfig
from nanorlsp.rl import WithValues

d = dist.setup("cpu", fsdp=True)
torch.manual_seed(0)
model = GPT(ModelConfig(vocab_size=64, n_layer=2, n_head=2, n_kv_head=1, n_embd=32))
head = nn.Linear(32, 1)
actor = WithValues(model, head)
dist.shard(actor, model.layers, "cpu", fp32=[head], param_dtype=torch.bfloat16)  # CUDA's policy
seen = []   # the dtype a block computes in
model.layers[0].attn.q_proj.register_forward_pre_hook(lambda m, a: seen.append(m.weight.dtype))
with torch.autocast("cpu", dtype=torch.bfloat16):
    logits, values = actor(torch.randint(0, 64, (2, 8)))
(logits.float().mean() + values.pow(2).mean()).backward()
g = head.weight.grad.full_tensor()
assert seen == [torch.bfloat16] and values.dtype == torch.float32, (seen, values.dtype)
assert g.dtype == torch.float32 and torch.isfinite(g).all() and g.abs().sum() > 0
dist.shutdown()
"""


def test_fsdp_value_head_stays_float32(tmp_path):
    """PPO's value head under FSDP2's bf16 mixed-precision policy (CUDA's, forced here on CPU):
    the blocks compute in bf16, the head in float32 (a unit of its own). Under the root's policy
    its weight was bf16 and the forward failed ("mat1 and mat2 must have the same dtype")."""
    script = tmp_path / "value_head.py"
    script.write_text(FSDP_VALUE_HEAD)
    r = run([*TORCHRUN, str(script)], PYTHONPATH=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]


def test_fsdp_needs_torchrun(sft, tmp_path):
    r = run([sys.executable, "train_rl.py", *RL, "--init_from", sft, "--fsdp",
             "--out_dir", str(tmp_path / "x")])
    assert r.returncode != 0 and r.stderr.strip() == (
        "error: --fsdp shards over torchrun ranks: run it under torchrun --nproc_per_node=N "
        "(N = 1 runs the sharded path on one device)")


@pytest.mark.slow
def test_rl_fsdp_on_one_rank_equals_one_process(sft, tmp_path):
    """torchrun --nproc_per_node=1 --fsdp (the GPU check's smoke run on one GPU): FSDP2 over a
    process group of one rank == the plain 1-process run, and its checkpoint is the sharded
    kind."""
    one, fs = str(tmp_path / "one"), str(tmp_path / "fsdp1")
    args = [ADAM, "train_rl.py", *RL, "--init_from", sft]
    r1 = run([sys.executable, *args, "--out_dir", one], ADAM_EPS=ADAM_EPS)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run([*TORCHRUN[:-1], "--nproc_per_node=1", *args, "--out_dir", fs, "--fsdp"],
             ADAM_EPS=ADAM_EPS)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert_same_run(one, fs, weights(sft)["model"], ["reward", "acc", "kl", "entropy", "loss"],
                    atol=SFT_ATOL, rtol=0)
    assert weights(fs)["optimizer"]["fsdp_full"]


# -----------------------------------------------------------------------------
# LoRA under torchrun: the adapters are all that trains, is reduced and is saved

LORA = ["--lora_rank", "4", "--lora_alpha", "8", "--lr", "3e-2"]


def lora_start(d):
    """The adapters' B at its initial zeros (A is seeded alike on every rank and in one process),
    to show the 2-rank and 1-process adapters really moved."""
    return {k: torch.zeros_like(v) for k, v in weights(d)["model"].items() if k.endswith("lora_B")}


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True])
def test_lora_rl_two_ranks_equal_one(sft, tmp_path, fsdp):
    """2-process DDP (and FSDP2 + activation checkpointing) with LoRA == 1 process on the same
    global batch: the adapters, the logged figures (the KL to the adapters-off reference too) and
    the transcripts. FSDP shards the frozen base and the adapters together; its rollout copy has
    the adapters merged in. Then the FSDP run resumes from its adapters-only checkpoint."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    args = [ADAM, "train_rl.py", *RL, "--init_from", sft, *LORA]
    r1 = run([sys.executable, *args, "--out_dir", one, *(["--grad_accum", "2"] if fsdp else [])],
             ADAM_EPS=ADAM_EPS)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run([*TORCHRUN, *args, "--out_dir", two, *(["--fsdp", "--act_ckpt"] if fsdp else [])],
             ADAM_EPS=ADAM_EPS)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "Traceback" not in r2.stderr
    a = weights(one)
    assert a["lora"]["rank"] == 4 and all(k.endswith(("lora_A", "lora_B")) for k in a["model"])
    assert_same_run(one, two, lora_start(one),
                    ["reward", "acc", "len_mean", "kl", "entropy", "loss", "grad_norm", "val_acc"],
                    atol=SFT_ATOL, rtol=0)
    assert open(os.path.join(one, "samples.jsonl")).read() == open(
        os.path.join(two, "samples.jsonl")).read()
    if fsdp:
        assert weights(two)["optimizer"]["fsdp_full"]
        r3 = run([*TORCHRUN, ADAM, "train_rl.py", "--out_dir", two, "--resume", "--max_steps", "4"],
                 ADAM_EPS=ADAM_EPS)
        assert r3.returncode == 0, r3.stderr[-3000:]
        assert weights(two)["step"] == 4


@pytest.mark.slow
def test_lora_sft_two_ranks_equal_one(sft, tmp_path):
    """train_sft.py --lora_rank on 2 DDP ranks == 1 process (gradient accumulation 2)."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    flags = [*SFT, "--init_from", sft, *LORA]
    r = run([sys.executable, ADAM, "train_sft.py", *flags, "--out_dir", one], ADAM_EPS=ADAM_EPS)
    assert r.returncode == 0, r.stderr[-2000:]
    run_sft(two, "--init_from", sft, *LORA)
    assert_same_run(one, two, lora_start(one), SFT_KEYS, **sft_tol)
