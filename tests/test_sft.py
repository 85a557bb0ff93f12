"""SFT loss, packing, checkpoints, and train_sft.py end to end (resume, bad input)."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from data import get_task
from helpers import one_error_line
from nanorlsp.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from nanorlsp.model import GPT, ModelConfig
from nanorlsp.sft import collate, pack, render_examples, sft_loss
from nanorlsp.tokenizer import build_tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ModelConfig(vocab_size=320, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)


@pytest.fixture(scope="module")
def tok_and_examples():
    rows = get_task("arith").make_sft_examples(200, seed=0)
    tok = build_tiny_tokenizer((r["prompt"] + r["response"] for r in rows), n_merges=32)
    return tok, render_examples(tok, rows)


# -----------------------------------------------------------------------------
# the loss

def test_sft_loss_ignores_masked_tokens():
    torch.manual_seed(0)
    B, T, V = 2, 6, 11
    logits = torch.randn(B, T, V, requires_grad=True)
    targets = torch.randint(0, V, (B, T))
    mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]], dtype=torch.float)
    loss = sft_loss(logits, targets, mask)
    # by hand: mean of -log softmax at the 6 masked-in positions
    lp = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    assert torch.allclose(loss, -(lp * mask).sum() / 6)
    loss.backward()
    assert logits.grad[mask == 0].abs().max() == 0          # no gradient through masked tokens
    assert logits.grad[mask == 1].abs().max() > 0
    # changing logits or targets at masked positions does not change the loss
    l2, t2 = logits.detach().clone(), targets.clone()
    l2[mask == 0] = 100 * torch.randn_like(l2[mask == 0])
    t2[mask == 0] = (t2[mask == 0] + 1) % V
    assert torch.allclose(sft_loss(l2, t2, mask), loss.detach())


def test_loss_mask_is_on_assistant_targets_only(tok_and_examples):
    tok, ex = tok_and_examples
    rows = pack(ex, 320, seed=0, epoch=0)[:2]
    idx, tgt, m, pos, am = collate(ex, rows, 320)
    got = [tok.decode(tgt[b][m[b] == 1].tolist()) for b in range(len(rows))]
    # exactly the assistant replies plus their <|end_of_turn|>, in packing order
    for b, row in enumerate(rows):
        want = "".join(tok.decode([t for t, k in zip(*ex[i]) if k]) for i in row)
        assert got[b] == want and "<|user|>" not in got[b]


def test_packing_equals_unpacked(tok_and_examples):
    """A packed example's logits equal the example run alone (block-diagonal attention and
    per-conversation positions make packing exact)."""
    tok, ex = tok_and_examples
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**TINY.to_dict(), "vocab_size": 64 * -(-tok.n_vocab // 64)})).eval()
    rows = pack(ex, 320, seed=0, epoch=0)
    assert len(rows[0]) >= 3  # really packed
    idx, tgt, m, pos, am = collate(ex, rows[:1], 320)
    with torch.no_grad():
        packed = model(idx, positions=pos, attn_mask=am)[0]
        o = 0
        for i in rows[0]:
            ids = torch.tensor([ex[i][0]])
            alone = model(ids)[0]
            assert torch.allclose(packed[o:o + len(ex[i][0])], alone, atol=1e-5)
            o += len(ex[i][0])


def test_pack_is_a_permutation_per_epoch(tok_and_examples):
    _, ex = tok_and_examples
    for epoch in (0, 1):
        rows = pack(ex, 320, seed=1, epoch=epoch)
        assert sorted(i for r in rows for i in r) == list(range(len(ex)))
        assert all(sum(len(ex[i][0]) for i in r) <= 321 for r in rows)
    assert pack(ex, 320, 1, 0) != pack(ex, 320, 1, 1)
    with pytest.raises(ValueError, match="seq_len"):
        pack(ex, 8, 0, 0)


def test_a_few_steps_lower_the_loss(tok_and_examples):
    tok, ex = tok_and_examples
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**TINY.to_dict(), "vocab_size": 64 * -(-tok.n_vocab // 64)}))
    opt = torch.optim.AdamW(model.optim_groups(0.1), lr=3e-3)
    rows = pack(ex, 320, seed=0, epoch=0)[:4]
    batch = collate(ex, rows, 320)
    losses = []
    for _ in range(15):
        idx, tgt, m, pos, am = batch
        loss = sft_loss(model(idx, positions=pos, attn_mask=am), tgt, m)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# -----------------------------------------------------------------------------
# checkpoints

def test_checkpoint_roundtrip_identical_logits(tmp_path, tok_and_examples):
    tok, _ = tok_and_examples
    torch.manual_seed(0)
    for tie in (False, True):
        cfg = ModelConfig(**{**TINY.to_dict(), "tie_embeddings": tie, "qkv_bias": tie})
        model = GPT(cfg)
        d = tmp_path / f"ck{tie}"
        save_checkpoint(str(d), model, tok, step=7, args={"x": 1})
        m2, tok2 = load_model(str(d))
        idx = torch.randint(0, cfg.vocab_size, (2, 9))
        assert torch.equal(model(idx), m2(idx))
        assert tok2.encode("What is 12 + 5?") == tok.encode("What is 12 + 5?")
        assert (m2.lm_head.weight is m2.embed_tokens.weight) == tie
        assert read_checkpoint(str(d))["step"] == 7


def test_bad_checkpoints_are_clear_errors(tmp_path, tok_and_examples):
    tok, _ = tok_and_examples
    d = tmp_path / "ck"
    save_checkpoint(str(d), GPT(TINY), tok, step=1, args={})
    raw = (d / "ckpt.pt").read_bytes()
    (d / "ckpt.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(str(d))
    (d / "ckpt.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(str(d))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(str(tmp_path / "missing"))
    # weights of another config
    other = tmp_path / "other"
    save_checkpoint(str(other), GPT(TINY), tok, step=1, args={})
    st = torch.load(other / "ckpt.pt", weights_only=True)
    st["model_config"]["n_embd"] = 64
    torch.save(st, other / "ckpt.pt")
    with pytest.raises(CheckpointError, match="shape"):
        load_model(str(other))


# -----------------------------------------------------------------------------
# train_sft.py end to end (tiny settings: a few seconds each)

SMALL = ["--n_train", "300", "--n_val", "40", "--n_merges", "32", "--batch_size", "2",
         "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--n_kv_head", "1",
         "--eval_problems", "4", "--max_new_tokens", "24", "--log_interval", "2",
         "--warmup_steps", "2"]


def run_sft(*args, check=True, **kw):
    r = subprocess.run([sys.executable, "train_sft.py", *SMALL, *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, **kw)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def metrics(d):
    return [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]


@pytest.mark.slow
def test_train_sft_runs_and_learns(tmp_path):
    d = str(tmp_path / "run")
    run_sft("--out_dir", d, "--max_steps", "30", "--eval_interval", "15", "--lr", "3e-3")
    ms = metrics(d)
    train = [m["loss"] for m in ms if "loss" in m]
    assert train[-1] < 0.8 * train[0]
    evals = [m for m in ms if "val_loss" in m]
    assert [m["step"] for m in evals] == [15, 30] and 0 <= evals[-1]["val_acc"] <= 1
    model, tok = load_model(d)          # what eval.py / train_rl.py will load
    assert model.config.n_layer == 1 and tok.n_vocab <= model.config.vocab_size
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["args"]["max_steps"] == 30 and cfg["step"] == 30
    # fine-tune from that checkpoint: same tokenizer and architecture, new directory
    d2 = str(tmp_path / "ft")
    run_sft("--out_dir", d2, "--init_from", d, "--max_steps", "2", "--eval_interval", "2")
    m2, tok2 = load_model(d2)
    assert m2.config == model.config and tok2.encode("What is 7 * 8?") == tok.encode("What is 7 * 8?")
    bad = run_sft("--out_dir", str(tmp_path / "ft2"), "--init_from", str(tmp_path / "nope"),
                  check=False)
    assert "no checkpoint or model" in one_error_line(bad)


# train_sft.py, Ctrl-C'd (a real SIGINT) right after its first checkpoint is written: the signal
# comes from the run itself, so no race with a poll that a busy machine may schedule late, and
# SIGINT's handler is set whatever the test process left to its children (SIG_IGN is inherited)
INTERRUPT_AFTER_FIRST_SAVE = """
import os, runpy, signal, sys
import nanorlsp.checkpoint as ck
signal.signal(signal.SIGINT, signal.default_int_handler)
save = ck.save_checkpoint
def save_then_interrupt(*a, **k):
    out = save(*a, **k)
    os.kill(os.getpid(), signal.SIGINT)
    return out
ck.save_checkpoint = save_then_interrupt
sys.argv = ["train_sft.py"] + sys.argv[1:]
runpy.run_path("train_sft.py", run_name="__main__")
"""


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path):
    """Kill a run (SIGINT) after its first checkpoint, --resume it, and compare with a run that
    was never interrupted: weights and optimizer state bit for bit."""
    n = 40
    common = ["--max_steps", str(n), "--eval_interval", "5", "--eval_problems", "0",
              "--batch_size", "4"]
    full = str(tmp_path / "full")
    run_sft("--out_dir", full, *common)

    cut = str(tmp_path / "cut")
    p = subprocess.Popen([sys.executable, "-c", INTERRUPT_AFTER_FIRST_SAVE, *SMALL, "--out_dir",
                          cut, *common], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out, err)  # really interrupted, not finished
    assert "interrupted at step" in err and "--resume" in err
    k = read_checkpoint(cut)["step"]
    assert 5 <= k < n

    run_sft("--out_dir", cut, "--resume")
    a, b = read_checkpoint(full), read_checkpoint(cut)
    assert b["step"] == n
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for i in sa:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[i][key], sb[i][key])
    # the resumed log has one record per step boundary, no duplicates from the lost tail
    steps = [m["step"] for m in metrics(cut) if "loss" in m]
    assert steps == sorted(set(steps)) and steps == [m["step"] for m in metrics(full) if "loss" in m]


@pytest.mark.parametrize("argv,pattern", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--bogus_flag", "1"], "unrecognized arguments: --bogus_flag"),
    (["--max_steps", "0"], "must be >= 1"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--styles", "direct,wait"], "arith has no style 'wait' (choose from direct, steps"),
    (["--task", "countdown", "--styles", "path"], "give its weight, path=W"),
    (["--styles", "steps=-1"], "a weight must be > 0"),
    # every numeric flag has its range (a negative --min_lr_frac gave a negative lr)
    (["--lr", "-1"], "argument --lr: must be > 0, got -1"),
    (["--min_lr_frac", "-0.5"], "argument --min_lr_frac: must be >= 0 and <= 1"),
    (["--min_lr_frac", "2"], "argument --min_lr_frac: must be >= 0 and <= 1"),
    (["--weight_decay", "-0.1"], "argument --weight_decay: must be >= 0"),
    (["--grad_clip", "-1"], "argument --grad_clip: must be >= 0"),
    (["--n_head", "3", "--n_embd", "128"], "--n_embd 128 --n_head 3"),   # was a traceback
])
def test_bad_flags_one_line(tmp_path, argv, pattern):
    r = run_sft("--out_dir", str(tmp_path / "x"), *argv, check=False)
    assert pattern in one_error_line(r)
    assert not os.path.exists(tmp_path / "x")


def test_styles_on_a_real_set_one_line(tmp_path):
    """--styles restricts synthetic trace styles; a real set's rationale has none (a file that
    has rationales, so the error is about the flag, not the data)."""
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    r = run_sft("--out_dir", str(tmp_path / "x"), "--task", "gsm8k", "--data", str(data),
                "--styles", "direct", check=False)
    assert "--styles is for the synthetic tasks" in one_error_line(r)
    assert not os.path.exists(tmp_path / "x")


def test_styles_saved_with_the_run(tmp_path):
    d = str(tmp_path / "run")
    run_sft("--out_dir", d, "--max_steps", "1", "--eval_problems", "0", "--n_train", "64",
            "--styles", "direct,steps")
    assert json.load(open(os.path.join(d, "config.json")))["args"]["styles"] == "direct,steps"


@pytest.mark.slow
def test_bad_checkpoints_nothing_overwritten(tmp_path):
    d = str(tmp_path / "run")
    assert "holds no checkpoint" in one_error_line(run_sft("--out_dir", d, "--resume", check=False))
    run_sft("--out_dir", d, "--max_steps", "2", "--eval_interval", "2")
    ck = os.path.join(d, "ckpt.pt")
    good = open(ck, "rb").read()
    # a second fresh run into the same directory must not clobber it
    assert "already holds a checkpoint" in one_error_line(run_sft("--out_dir", d, check=False))
    assert open(ck, "rb").read() == good
    for bad in (good[: len(good) // 3], b"\x00garbage"):
        open(ck, "wb").write(bad)
        line = one_error_line(run_sft("--out_dir", d, "--resume", check=False))
        assert "corrupt or truncated" in line
        assert open(ck, "rb").read() == bad  # nothing overwritten


def test_seq_len_shorter_than_a_demonstration(tmp_path):
    """A --seq_len that a demonstration does not fit is refused in one line, unless --drop_long,
    which trains on the demonstrations that fit and says how many it dropped."""
    r = run_sft("--out_dir", str(tmp_path / "a"), "--seq_len", "32", "--max_steps", "1",
                check=False)
    assert "--drop_long" in one_error_line(r)
    r = run_sft("--out_dir", str(tmp_path / "b"), "--seq_len", "32", "--drop_long",
                "--max_steps", "2", "--eval_interval", "2", "--eval_problems", "0")
    n = re.search(r"dropped (\d+) of 300 demonstrations longer than 33 tokens", r.stdout)
    assert n and 0 < int(n.group(1)) < 300, r.stdout
    assert re.search(r"longest (\d+)\), rows of 32", r.stdout)
    assert int(re.search(r"longest (\d+)\)", r.stdout).group(1)) <= 33


@pytest.mark.slow
def test_resume_keeps_the_cosine_horizon(tmp_path):
    """The cosine decay ends at the run's first --max_steps: resuming a 4-step run with
    --max_steps 6 trains steps 5 and 6 at the final lr (the horizon moved to 6 mid-run)."""
    d = str(tmp_path / "run")
    flags = ["--out_dir", d, "--n_train", "64", "--n_val", "8", "--eval_problems", "0",
             "--warmup_steps", "0", "--log_interval", "1", "--eval_interval", "4",
             "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--n_kv_head", "1"]
    run_sft(*flags, "--max_steps", "4")
    run_sft(*flags, "--max_steps", "6", "--resume")
    lrs = [m["lr"] for m in metrics(d) if "lr" in m]
    cos = [1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 4))) for s in range(4)]
    assert lrs == pytest.approx(cos + [1e-4, 1e-4], rel=1e-12)
    assert read_checkpoint(d)["args"]["decay_steps"] == 4


@pytest.mark.slow
def test_resume_restores_the_task_and_settings(tmp_path):
    """train_sft.py built the task from the defaults before --resume restored
    the run's args, so `--resume --out_dir X` of a countdown run went on training on arith. A
    countdown run of 4 steps cut after its step-2 checkpoint, resumed with nothing but --resume
    --out_dir, equals the uninterrupted run bit for bit."""
    common = ["--task", "countdown", "--eval_interval", "2", "--eval_problems", "0",
              "--batch_size", "4", "--n_train", "200"]
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    run_sft("--out_dir", full, *common, "--max_steps", "4")
    run_sft("--out_dir", cut, *common, "--max_steps", "2")
    path = os.path.join(cut, "ckpt.pt")
    st = torch.load(path, weights_only=True)
    st["args"].update(max_steps=4, decay_steps=4)   # as if a 4-step run was cut at step 2
    torch.save(st, path)
    r = subprocess.run([sys.executable, "train_sft.py", "--resume", "--out_dir", cut], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = read_checkpoint(full), read_checkpoint(cut)
    assert b["step"] == 4 and b["args"]["task"] == "countdown"
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
