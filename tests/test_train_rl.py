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
from nanorlsp.checkpoint import load_model, read_checkpoint, save_checkpoint
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


def run_injected(patch: str, *args):
    """train_rl.py with a fault injected: `patch` runs first, after `import nanorlsp.rl as rl`."""
    code = ("import runpy, sys\nimport nanorlsp.rl as rl\n" + patch
            + "sys.argv = ['train_rl.py'] + sys.argv[1:]\n"
            "runpy.run_path('train_rl.py', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code, *SMALL, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


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
    # every case names its own --out_dir: the default, out/rl, holds the README's run in a
    # checkout that followed it, and the resume check would answer first
    assert "invalid choice: 'sac'" in one_error_line(
        run_rl("--init_from", sft, "--algo", "sac", "--out_dir", str(tmp_path / "s"), check=False))
    assert "no checkpoint or model" in one_error_line(
        run_rl("--init_from", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "y"),
               check=False))
    assert "--temperature must be > 0" in one_error_line(
        run_rl("--init_from", sft, "--temperature", "0", "--out_dir", str(tmp_path / "t"),
               check=False))
    assert not any(os.path.exists(tmp_path / d) for d in ("s", "t", "y"))  # nothing written


@pytest.mark.slow
def test_rl_resume_with_another_config_is_refused(sft, tmp_path):
    d = str(tmp_path / "run")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0")
    other = tiny_ckpt(tmp_path / "other", n_embd=64)
    line = one_error_line(run_rl("--init_from", other, "--out_dir", d, "--resume", check=False))
    assert "another model config" in line


@pytest.mark.slow
@pytest.mark.parametrize("objective", [[], ["--policy_loss", "clip", "--updates_per_batch", "2",
                                            "--dynamic_sampling", "--explore_reward", "none",
                                            "--overlong_buffer", "4"]])
def test_rl_resume_is_bit_exact(sft, tmp_path, objective):
    """2 steps, stop, --resume to 4 == 4 steps straight: same weights and Adam state bit for bit
    (rollouts are a pure function of seed and step, the optimizer state is in the checkpoint;
    dynamic sampling's redraws are a pure function of seed, step and redraw)."""
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    common = ["--init_from", sft, "--eval_interval", "2", "--eval_problems", "0", "--lr", "3e-3",
              *objective]
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
    r = run_injected("orig, n = rl.kl_penalty, [0]\n"     # one call per REINFORCE update
                     "def bad(*a):\n"
                     "    n[0] += 1\n"
                     "    return orig(*a) * (float('nan') if n[0] == 2 or n[0] >= 4 else 1.0)\n"
                     "rl.kl_penalty = bad\n",
                     "--init_from", sft, "--out_dir", d, "--max_steps", "10",
                     "--eval_interval", "1", "--eval_problems", "0")
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


def test_rl_paper_reward(sft, tmp_path):
    """--explore_reward rlsp_paper (the authors' form) on the tiny model: finite rewards within
    the [-10, 10] clip, no repetition part; --explore_coef is its lambda."""
    d = str(tmp_path / "paper")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "2", "--eval_problems", "0",
           "--explore_reward", "rlsp_paper", "--explore_coef", "2")
    steps = [m for m in map(json.loads, open(os.path.join(d, "metrics.jsonl"))) if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert all(math.isfinite(m[k]) and -10 <= m[k] <= 10 for m in steps
               for k in ("reward", "outcome", "explore"))
    assert all(m["repetition"] == 0 and m["explore"] < 0 and m["explore_coef"] == 2
               for m in steps)


def stretch_run(d, max_steps, **saved):
    """Make the checkpoint in d look like a run of max_steps interrupted at its last save (its
    saved args say max_steps), so `--resume --out_dir d` alone continues it."""
    path = os.path.join(d, "ckpt.pt")
    st = torch.load(path, weights_only=True)
    st["args"].update(max_steps=max_steps, schedule_steps=max_steps, **saved)
    torch.save(st, path)


@pytest.mark.slow
def test_rl_resume_restores_the_runs_own_settings(sft, tmp_path):
    """open_run replaced args only after the task, the reward config, the dtype
    and PPO's minibatch count were built from the defaults, so `--resume --out_dir X` of a
    countdown PPO run with --explore_reward none continued on arith with rlsp and M = 1. Now a
    resume with nothing but --resume --out_dir equals the uninterrupted run."""
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    common = ["--init_from", sft, "--task", "countdown", "--algo", "ppo", "--explore_reward",
              "none", "--minibatches", "2", "--eval_problems", "0", "--eval_interval", "1",
              "--lr", "3e-3", "--max_new_tokens", "8"]
    run_rl(*common, "--out_dir", full, "--max_steps", "2")
    run_rl(*common, "--out_dir", cut, "--max_steps", "1")
    stretch_run(cut, 2)
    r = subprocess.run([sys.executable, "train_rl.py", "--resume", "--out_dir", cut], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    la = [json.loads(x) for x in open(os.path.join(full, "metrics.jsonl"))]
    lb = [json.loads(x) for x in open(os.path.join(cut, "metrics.jsonl"))]
    last = [m for m in lb if m.get("step") == 2 and "reward" in m][0]
    assert last["explore"] == 0.0 and last["updates"] == 2 * 2      # none; 2 epochs x M = 2
    prompts = [json.loads(x)["prompt"] for x in open(os.path.join(cut, "samples.jsonl"))]
    assert all("What is" not in p for p in prompts), prompts       # countdown, not arith
    assert [(m["step"], m["reward"]) for m in la if "reward" in m] == \
        [(m["step"], m["reward"]) for m in lb if "reward" in m]
    a, b = read_checkpoint(full), read_checkpoint(cut)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["value_head"][k], b["value_head"][k]) for k in a["value_head"])


@pytest.mark.slow
def test_ppo_old_logprobs_from_the_training_forward(sft, tmp_path):
    """with rollouts from the bf16 copy, PPO's old log-probs came from that copy
    while the new ones came from the fp32 master under autocast, so the ratio was not 1 before
    the first update (with a clip of 1e-4 most tokens were clipped at the first minibatch). Now
    one epoch of one minibatch clips nothing, and logp_diff reports the copy's mismatch."""
    d = str(tmp_path / "ppo")
    run_rl("--init_from", sft, "--out_dir", d, "--algo", "ppo", "--max_steps", "1",
           "--ppo_epochs", "1", "--minibatches", "1", "--clip", "1e-4", "--dtype", "bfloat16",
           "--eval_problems", "0", "--max_new_tokens", "16")
    m = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))][0]
    assert m["clip_frac"] == 0.0
    assert 1e-5 < m["logp_diff"] < 1.0          # the bf16 copy differs a little from the master
    for k in ("flat_groups", "no_answer", "truncated", "grad_norm"):
        assert 0 <= m[k] < math.inf, k
    # float32 rollouts on the policy itself: sampler and training forward agree
    d32 = str(tmp_path / "fp32")
    run_rl("--init_from", sft, "--out_dir", d32, "--max_steps", "1", "--eval_problems", "0")
    assert [json.loads(x) for x in open(os.path.join(d32, "metrics.jsonl"))][0]["logp_diff"] < 1e-4


@pytest.mark.slow
def test_reinforce_truncated_importance_sampling(sft, tmp_path):
    d = str(tmp_path / "tis")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0",
           "--dtype", "bfloat16", "--tis_cap", "2")
    m = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))][0]
    assert math.isfinite(m["loss"]) and m["logp_diff"] > 0
    # PPO too (it was refused): the weight min(pi_old / pi_rollout, cap) on the clipped loss
    d = str(tmp_path / "tis_ppo")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0",
           "--dtype", "bfloat16", "--tis_cap", "2", "--algo", "ppo")
    m = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))][0]
    assert math.isfinite(m["loss"]) and m["logp_diff"] > 0 and m["updates"] == 4


@pytest.mark.slow
def test_skipped_final_step_still_saves(sft, tmp_path):
    """a skipped final step skipped the final save while the run printed
    "checkpoint in ...". Step 2 here is non-finite (a NaN reference, so the KL is NaN): the run
    ends with a checkpoint at step 2."""
    d = str(tmp_path / "run")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0")
    bad_ref = tmp_path / "nan_ref"
    st = read_checkpoint(sft)
    model = GPT(ModelConfig(**st["model_config"]))
    model.load_state_dict(st["model"])
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    from nanorlsp.tokenizer import load_tokenizer
    save_checkpoint(str(bad_ref), model, load_tokenizer(sft), step=0, args={})
    r = run_rl("--out_dir", d, "--resume", "--init_from", str(bad_ref), "--max_steps", "2")
    assert "step 2: non-finite" in r.stdout + r.stderr
    assert f"checkpoint in {d}" in r.stdout
    assert read_checkpoint(d)["step"] == 2


def test_non_finite_float_flags_refused(sft, tmp_path):
    for flag in ("--explore_coef", "--lr", "--kl_coef"):
        line = one_error_line(run_rl("--init_from", sft, flag, "nan", "--out_dir",
                                     str(tmp_path / "x"), check=False))
        assert f"argument {flag}: must be a finite number, got nan" in line
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("flag,value,pattern", [
    ("--grad_clip", "-1", "argument --grad_clip: must be >= 0, got -1"),  # reversed the update
    ("--lr", "-1", "argument --lr: must be > 0, got -1"),
    ("--lr", "0", "argument --lr: must be > 0"),
    ("--kl_coef", "-0.1", "argument --kl_coef: must be >= 0"),
    ("--explore_coef", "-1", "argument --explore_coef: must be >= 0"),
    ("--economy_coef", "-1", "argument --economy_coef: must be >= 0"),
    ("--acc_threshold", "1.5", "argument --acc_threshold: must be >= 0 and <= 1"),
    ("--clip", "-0.2", "argument --clip: must be > 0 and < 1"),
    ("--clip", "1", "argument --clip: must be > 0 and < 1"),
    ("--value_clip", "0", "argument --value_clip: must be > 0"),
    ("--vf_coef", "-1", "argument --vf_coef: must be >= 0"),
    ("--gamma", "1.5", "argument --gamma: must be >= 0 and <= 1"),
    ("--gae_lambda", "-0.5", "argument --gae_lambda: must be >= 0 and <= 1"),
    ("--tis_cap", "-1", "argument --tis_cap: must be >= 0"),
    ("--tis_cap", "0.5", "--tis_cap 0.5: a cap >= 1"),
    ("--temperature", "-1", "--temperature must be > 0"),
    ("--n_samples", "1", "--n_samples 1"),          # every group-baseline advantage is 0
    ("--prompts_per_step", "20002", "more than the 20000 train problems"),  # was a traceback
])
def test_rl_flag_ranges(sft, tmp_path, flag, value, pattern):
    """Every numeric flag has its range: a value outside it is one line, nothing written."""
    line = one_error_line(run_rl("--init_from", sft, flag, value, "--out_dir",
                                 str(tmp_path / "x"), check=False))
    assert pattern in line
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("flags,pattern", [
    (["--algo", "ppo", "--policy_loss", "gspo"], "--policy_loss gspo is for --algo reinforce"),
    (["--algo", "ppo", "--loss_agg", "seq_mean"], "--loss_agg seq_mean is for --algo reinforce"),
    (["--algo", "ppo", "--clip_high", "0.3"], "--clip_high is for --policy_loss"),
    (["--updates_per_batch", "2"], "REINFORCE has no ratio"),
    (["--policy_loss", "clip", "--clip", "0.2", "--clip_high", "0.1"], "is below --clip 0.2"),
    (["--overlong_buffer", "12"], "--overlong_buffer 12 must be below --max_new_tokens 12"),
    (["--loss_agg", "sum"], "argument --loss_agg: invalid choice: 'sum'"),
    (["--updates_per_batch", "0"], "argument --updates_per_batch"),
])
def test_rl_objective_flags_refused(sft, tmp_path, flags, pattern):
    """A combination of the objective's flags that means nothing is one line, nothing written."""
    line = one_error_line(run_rl("--init_from", sft, *flags, "--out_dir", str(tmp_path / "x"),
                                 check=False))
    assert pattern in line
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.slow
@pytest.mark.parametrize("flags,keys", [
    (["--policy_loss", "clip", "--updates_per_batch", "2", "--clip_high", "0.28",
      "--loss_agg", "constant"], []),
    (["--policy_loss", "gspo", "--overlong_buffer", "4", "--mask_truncated"], ["overlong"]),
    (["--policy_loss", "cispo", "--dynamic_sampling", "--max_redraws", "2"],
     ["prompts_drawn", "dyn_groups", "flat_first_draw"]),
])
def test_rl_objectives_short_runs(sft, tmp_path, flags, keys):
    """Each objective runs end to end; its own figures are logged, and only when it is on."""
    d = str(tmp_path / "run")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "2", "--eval_problems", "0",
           *flags)
    ms = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    steps = [m for m in ms if "reward" in m]
    assert len(steps) == 2
    for m in steps:
        assert math.isfinite(m["loss"]) and math.isfinite(m["clip_frac"])
        assert {"overlong", "prompts_drawn", "dyn_groups", "flat_first_draw"} & set(m) == set(keys)
    if "--updates_per_batch" in flags:
        assert steps[0]["updates"] == 2
    if "--dynamic_sampling" in flags:
        assert all(m["prompts_drawn"] in (2, 4, 6) for m in steps)
    assert read_checkpoint(d)["args"]["clip"] == (3e-4 if "gspo" in flags else 0.2)


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "..", "shared", "data",
                                                    "gsm8k_test.jsonl")),
                    reason="../shared/data absent")
def test_rl_prompts_that_do_not_fit_are_skipped(sft, tmp_path):
    """A problem whose prompt cannot fit the model's context is skipped with a count, before it
    is tokenized (a 20M-character one tried to allocate 400 TB); a pool that is left smaller than
    --prompts_per_step is one line."""
    data = tmp_path / "train.jsonl"
    rows = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": "7" * 5_000_000,
                                                          "answer": "7"},
            {"question": "What is 4 + 4?", "answer": "8"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--init_from", sft, "--task", "gsm8k", "--data", str(data), "--eval_problems", "0"]
    r = run_rl(*common, "--out_dir", str(tmp_path / "ok"), "--max_steps", "1")
    assert "train: skipped 1 of 3 problems whose prompt does not fit the model's 512-token " \
           "context (the first: train.jsonl:2)" in r.stdout
    line = one_error_line(run_rl(*common, "--out_dir", str(tmp_path / "x"), "--prompts_per_step",
                                 "4", check=False))
    assert "--prompts_per_step 4 is more than the 2 train problems that fit" in line


@pytest.mark.slow
def test_rl_resume_keeps_the_schedule_horizon(sft, tmp_path):
    """The linear schedule's horizon is the run's first --max_steps: resuming a 2-step run with
    --max_steps 3 goes on at 0 (it moved the horizon to 3: step 3 got 0.5 x 1/3)."""
    d = str(tmp_path / "lin")
    common = ["--init_from", sft, "--eval_problems", "0", "--explore_schedule", "linear"]
    run_rl(*common, "--out_dir", d, "--max_steps", "2")
    run_rl(*common, "--out_dir", d, "--max_steps", "3", "--resume")
    ms = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    assert [(m["step"], m["explore_coef"]) for m in ms] == [(1, 0.5), (2, 0.25), (3, 0.0)]
    assert read_checkpoint(d)["args"]["schedule_steps"] == 2


@pytest.mark.slow
def test_rl_logged_kl_is_the_estimators(sft, tmp_path):
    """The logged kl is the value of --kl_estimator's term (it was always k3). Step 1's update is
    the same for all three (the KL and its gradient are 0 at the reference), so step 2 scores
    the same samples with three estimators: three different values."""
    kls = {}
    for est in ("k1", "k2", "k3"):
        d = str(tmp_path / est)
        run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "2", "--eval_problems", "0",
               "--lr", "3e-3", "--kl_estimator", est)
        ms = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
        assert ms[0]["kl"] == 0.0
        kls[est] = ms[1]["kl"]
    assert len(set(kls.values())) == 3 and kls["k2"] > 0 and kls["k3"] > 0, kls


@pytest.mark.slow
def test_ppo_partial_step_is_logged_as_applied(sft, tmp_path):
    """Fault injection: PPO's 2nd minibatch loss of 4 is NaN. The 1st update stays applied: the
    step is logged with its figures, updates = 1 and a 'partial' mark (it was logged as
    skipped, figures dropped)."""
    d = str(tmp_path / "run")
    r = run_injected("orig, n = rl.ppo_policy_loss, [0]\n"
                     "def bad(*a):\n"
                     "    n[0] += 1\n"
                     "    loss, cf = orig(*a)\n"
                     "    return loss * (float('nan') if n[0] == 2 else 1.0), cf\n"
                     "rl.ppo_policy_loss = bad\n",
                     "--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems",
                     "0", "--algo", "ppo")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "partially applied (1 of 4 minibatch updates)" in r.stdout
    m = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))][0]
    assert m["updates"] == 1 and "partial" in m and "skipped" not in m
    assert math.isfinite(m["loss"]) and math.isfinite(m["reward"])


@pytest.mark.slow
def test_rl_grad_clip_0_is_off(sft, tmp_path):
    """--grad_clip 0 means no clipping (as train_sft.py's): it scaled every gradient to 0, so
    the weights never moved."""
    d = str(tmp_path / "gc0")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0",
           "--grad_clip", "0", "--lr", "3e-3")
    ref, st = read_checkpoint(sft)["model"], read_checkpoint(d)["model"]
    assert any(not torch.equal(ref[k], st[k]) for k in ref)


@pytest.mark.slow
def test_threshold_schedule_is_off_once(sft, tmp_path):
    """--explore_schedule threshold is "off once the batch accuracy reaches
    --acc_threshold", but it switched back on at any later step below it. Step 1 (accuracy 0 >=
    threshold 0) switches it off; after resuming with a threshold of 0.5, step 2 (accuracy 0)
    must stay off."""
    d = str(tmp_path / "thr")
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0",
           "--explore_schedule", "threshold", "--acc_threshold", "0")
    assert read_checkpoint(d)["explore_off"] is True
    stretch_run(d, 2, acc_threshold=0.5)
    run_rl("--out_dir", d, "--resume", "--init_from", sft)
    ms = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    assert [(m["step"], m["explore_coef"], m["acc"]) for m in ms] == [(1, 0.0, 0.0), (2, 0.0, 0.0)]


@pytest.mark.parametrize("economy", ["kimi", "alp", "budget"])
def test_rl_economy_terms(sft, tmp_path, economy):
    """--economy with the adaptive schedule (easy prompts economise, hard ones explore) and
    alone: the economy part is logged and the run is finite."""
    d = str(tmp_path / economy)
    run_rl("--init_from", sft, "--out_dir", d, "--max_steps", "1", "--eval_problems", "0",
           "--explore_schedule", "adaptive", "--acc_threshold", "0", "--economy", economy)
    m = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))][0]
    assert m["easy_frac"] == 1.0 and m["explore"] == 0.0 and math.isfinite(m["economy"])
    if economy == "alp":
        assert m["economy"] < 0                   # every reply pays a per-token price


# -----------------------------------------------------------------------------
# LoRA (--lora_rank): adapters only, the reference = the base with the adapters off

LORA = ["--lora_rank", "4", "--lora_alpha", "8", "--eval_problems", "0", "--lr", "3e-3"]


def adapter_keys(cfg, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj")):
    return {f"layers.{i}.{'attn' if t[0] in 'qkvo' else 'mlp'}.{t}.lora_{ab}"
            for i in range(cfg["n_layer"]) for t in targets for ab in "AB"}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_lora_rl_step_updates_adapters_only(sft, tmp_path, algo):
    """A LoRA RL run trains the adapters (and PPO's value head) alone: they are all the optimizer
    holds and all the checkpoint keeps, beside the base's name; the reference is the base with
    the adapters off (REINFORCE's first step, at B = 0, has a KL of exactly 0); load_model
    merges the adapters into the untouched base."""
    d = str(tmp_path / algo)
    run_rl("--init_from", sft, "--out_dir", d, "--algo", algo, "--max_steps", "2",
           "--eval_interval", "2", *LORA)
    st, base = read_checkpoint(d), read_checkpoint(sft)["model"]
    assert set(st["model"]) == adapter_keys(st["model_config"])     # no base weight saved
    assert {k: st["lora"][k] for k in ("rank", "alpha", "base")} == dict(
        rank=4, alpha=8.0, base=os.path.abspath(sft))
    opt = st["optimizer"]
    n_head = 2 if algo == "ppo" else 0                               # value head weight + bias
    assert sum(len(g["params"]) for g in opt["param_groups"]) == len(st["model"]) + n_head
    assert len(opt["state"]) == len(st["model"]) + n_head
    assert all(st["model"][k].abs().max() > 0 for k in st["model"] if k.endswith("lora_B"))
    steps = [m for m in map(json.loads, open(os.path.join(d, "metrics.jsonl"))) if "reward" in m]
    if algo == "reinforce":
        assert steps[0]["kl"] == 0.0 and steps[1]["kl"] > 0
    model, _ = load_model(d)
    assert model.lora is None and set(model.state_dict()) == set(base)
    sd = model.state_dict()
    for k, w in base.items():
        p = k.removesuffix(".weight")
        if p + ".lora_A" in st["model"]:   # W + alpha / r B A
            want = w + 2.0 * st["model"][p + ".lora_B"] @ st["model"][p + ".lora_A"]
            assert torch.allclose(sd[k], want, atol=1e-6) and not torch.equal(sd[k], w), k
        else:                               # norms, embedding, head: the base's own
            assert torch.equal(sd[k], w), k


@pytest.mark.slow
def test_lora_rl_resume_is_bit_exact(sft, tmp_path):
    """2 steps, stop, --resume to 3 == 3 steps straight, adapters and Adam state bit for bit.
    The resumed run reloads the base from disk, so this also shows training never wrote to the
    frozen weights it held."""
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    common = ["--init_from", sft, "--eval_interval", "2", *LORA]
    run_rl(*common, "--out_dir", full, "--max_steps", "3")
    run_rl(*common, "--out_dir", half, "--max_steps", "2")
    run_rl("--out_dir", half, "--max_steps", "3", "--resume")
    a, b = read_checkpoint(full), read_checkpoint(half)
    assert a["step"] == b["step"] == 3 and set(a["model"]) == set(b["model"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    la = [json.loads(x) for x in open(os.path.join(full, "metrics.jsonl"))]
    lb = [json.loads(x) for x in open(os.path.join(half, "metrics.jsonl"))]
    assert [(m["step"], m["reward"], m["kl"]) for m in la] == [
        (m["step"], m["reward"], m["kl"]) for m in lb]
    other = tiny_ckpt(tmp_path / "other")
    assert "its reference is that base" in one_error_line(run_rl(
        "--out_dir", half, "--max_steps", "4", "--resume", "--init_from", other, check=False))


@pytest.mark.slow
def test_lora_sft_then_lora_rl(sft, tmp_path):
    """train_sft.py --lora_rank on a checkpoint, then train_rl.py --lora_rank on that LoRA run:
    the SFT adapters come merged (the RL run's base), the RL adapters go on top; eval's
    load_model of the RL run goes down the chain of bases. Then the bad inputs, one line each."""
    s, r = str(tmp_path / "sft_lora"), str(tmp_path / "rl_lora")
    p = subprocess.run([sys.executable, "train_sft.py", "--init_from", sft, "--out_dir", s,
                        "--lora_rank", "2", "--lora_targets", "q_proj,v_proj", "--n_train", "100",
                        "--n_val", "8", "--eval_problems", "2", "--max_new_tokens", "8",
                        "--max_steps", "3", "--eval_interval", "3", "--batch_size", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "lora: rank 2" in p.stdout
    ss = read_checkpoint(s)
    assert set(ss["model"]) == adapter_keys(ss["model_config"], ("q_proj", "v_proj"))
    run_rl("--init_from", s, "--out_dir", r, "--max_steps", "1", "--eval_interval", "1", *LORA)
    assert read_checkpoint(r)["lora"]["base"] == os.path.abspath(s)
    sft_merged, _ = load_model(s)
    rl_merged, _ = load_model(r)
    idx = torch.randint(0, sft_merged.config.vocab_size, (2, 9))
    with torch.no_grad():
        assert not torch.equal(sft_merged(idx), load_model(sft)[0](idx))   # SFT moved it
        assert (rl_merged(idx) - sft_merged(idx)).abs().max() > 0           # and RL on top

    bad = lambda *a: one_error_line(run_rl("--init_from", sft, *a, check=False))  # noqa: E731
    assert "--lora_targets" in bad("--lora_rank", "2", "--lora_targets", "q_proj,lm_head")
    assert "alpha > 0" in bad("--lora_rank", "2", "--lora_alpha", "0", "--out_dir",
                              str(tmp_path / "a0"))
    own = tiny_ckpt(tmp_path / "own")   # not the shared fixture: --overwrite is refused, but...
    assert "overwrite the base" in one_error_line(run_rl(
        "--init_from", own, "--out_dir", own, "--overwrite", "--lora_rank", "2", check=False))
    p = subprocess.run([sys.executable, "train_sft.py", "--lora_rank", "2", "--out_dir",
                        str(tmp_path / "scratch")], cwd=ROOT, capture_output=True, text=True)
    assert "--lora_rank adapts a trained model" in one_error_line(p)
