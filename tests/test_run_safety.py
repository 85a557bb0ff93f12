"""Nothing lost, one line for every mistake: a resumed run writes where it is now, one run per
out_dir (a lock the kernel drops when the run dies), stale temporary files removed, eval.py never
writes over a model and checks its outputs and prompts first, checkpoint CRCs, model configs
checked field by field, torn run logs, chat.py over a pipe."""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from helpers import one_error_line
from nanorlsp.checkpoint import (CKPT_NAME, CheckpointError, load_model, model_from_state,
                                 open_run, read_checkpoint, save_checkpoint)
from nanorlsp.common import ArgParser, UserError, reset_logs
from nanorlsp.tooling.hf import config_from_hf
from nanorlsp.model import GPT, ModelConfig
from nanorlsp.tokenizer import RANKS_FILE, build_tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT_SMALL = ["--n_train", "300", "--n_val", "40", "--n_merges", "32", "--batch_size", "2",
             "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--n_kv_head", "1",
             "--eval_problems", "0", "--log_interval", "1", "--warmup_steps", "2"]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer(["What is 2 + 3? Answer: 5"], n_merges=8)


def tiny_model(tok, **cfg):
    torch.manual_seed(0)
    return GPT(ModelConfig(**{"vocab_size": 64 * math.ceil(tok.n_vocab / 64), "n_layer": 1,
                              "n_head": 2, "n_kv_head": 1, "n_embd": 32, **cfg}))


def run_args(out_dir, resume=False, **kw):
    """The namespace a training script's parser gives open_run."""
    return argparse.Namespace(**{"out_dir": str(out_dir), "resume": resume, "overwrite": False,
                                 "max_steps": 10, "init_from": "scratch", "lr": 1e-3, **kw})


def save_run(out_dir, tok, step=2, **args):
    save_checkpoint(str(out_dir), tiny_model(tok), tok, step, vars(run_args(out_dir, **args)))
    return str(out_dir)


def script(name, *argv, **kw):
    return subprocess.run([sys.executable, name, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          **kw)


# -----------------------------------------------------------------------------
# the run directory: resumed where it is, one run at a time, no stale temporaries

def test_resume_writes_in_the_out_dir_given(tmp_path, tok):
    """A copy P -> Q resumed with --out_dir Q continues in Q (the saved out_dir was P: P's
    newer run was overwritten by the old one); a moved run R1 -> R2 does not recreate R1."""
    p, q = save_run(tmp_path / "P", tok), str(tmp_path / "Q")
    shutil.copytree(p, q)
    args = run_args(q, resume=True)
    state = open_run(args, ["--resume", "--out_dir", q], keep={"max_steps"})
    assert state["step"] == 2 and args.out_dir == q
    r1 = save_run(tmp_path / "R1", tok)
    r2 = str(tmp_path / "R2")
    os.rename(r1, r2)
    args = run_args(r2, resume=True)
    open_run(args, ["--resume", "--out_dir", r2], keep=set())
    assert args.out_dir == r2 and not os.path.exists(r1)


@pytest.mark.slow
def test_resumed_copy_leaves_the_original_alone(tmp_path):
    p, q = str(tmp_path / "P"), str(tmp_path / "Q")
    r = script("train_sft.py", *SFT_SMALL, "--out_dir", p, "--max_steps", "2",
               "--eval_interval", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    shutil.copytree(p, q)
    before = {f: open(os.path.join(p, f), "rb").read() for f in ("ckpt.pt", "metrics.jsonl")}
    r = script("train_sft.py", "--out_dir", q, "--resume", "--max_steps", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_checkpoint(q)["step"] == 3 and read_checkpoint(q)["args"]["out_dir"] == q
    assert all(open(os.path.join(p, f), "rb").read() == b for f, b in before.items())


HOLD = ("import sys\nfrom nanorlsp.checkpoint import lock_run_dir\nlock_run_dir(sys.argv[1])\n"
        "print('locked', flush=True)\nsys.stdin.read()\n")


@pytest.mark.slow
def test_second_run_on_an_out_dir_is_refused(tmp_path):
    """Two real runs on one --out_dir: the second is refused with one line naming the first's
    PID (both used to exit 0, interleaving metrics.jsonl); SIGKILL releases the lock."""
    d = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "train_sft.py", *SFT_SMALL, "--out_dir", d,
                              "--max_steps", "100000"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        while not first.stdout.readline().startswith("step"):   # it is training
            assert first.poll() is None
        line = one_error_line(script("train_sft.py", *SFT_SMALL, "--out_dir", d,
                                     "--max_steps", "2", "--overwrite"))
        assert "in use by another run" in line and f"pid {first.pid}" in line
    finally:
        first.kill()
        first.wait()
    r = script("-c", HOLD, d, input="")          # the killed run left no lock behind
    assert r.returncode == 0 and r.stdout.strip() == "locked", r.stderr


def test_a_refused_run_leaves_no_new_dir_behind(tmp_path):
    """A run that exits having written nothing removes the dir open_run made for its lock, and
    says nothing when that dir went away meanwhile."""
    code = ("import argparse, os, sys\nfrom nanorlsp.checkpoint import open_run\n"
            "open_run(argparse.Namespace(out_dir=sys.argv[1], resume=False, overwrite=False), "
            "[], set())\nif len(sys.argv) > 2: os.rename(sys.argv[1], sys.argv[2])\n")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    r = script("-c", code, a)
    assert r.returncode == 0 and not os.path.exists(a), r.stderr
    r = script("-c", code, a, b)
    assert r.returncode == 0 and r.stderr == "" and os.listdir(b) == [".lock"], r.stderr


def test_ranks_of_one_job_share_the_lock(tmp_path, tok, monkeypatch):
    """Under torchrun only rank 0 locks: the other ranks of the job open the same run."""
    d = save_run(tmp_path / "run", tok)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, d], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("RANK", "1")
        assert open_run(run_args(d, resume=True), ["--resume"], keep=set())["step"] == 2
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(UserError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            open_run(run_args(d, resume=True), ["--resume"], keep=set())
    finally:
        holder.kill()
        holder.wait()


def test_stale_temporary_files_are_removed(tmp_path, tok):
    """A kill between atomic_write's mkstemp and its rename left ckpt.pt.tmp.XXXXXXXX forever."""
    d = save_run(tmp_path / "run", tok)
    stale = [os.path.join(d, n) for n in ("ckpt.pt.tmp.ab_cd123", "config.json.tmp.x1y2z3w4")]
    for f in stale:
        open(f, "w").write("half a save")
    open(os.path.join(d, "notes.tmp.txt"), "w").write("mine")   # not a temporary of ours
    open_run(run_args(d, resume=True), ["--resume"], keep=set())
    assert not any(os.path.exists(f) for f in stale)
    assert os.path.exists(os.path.join(d, "notes.tmp.txt"))


def test_unusable_out_dir_is_one_line(tmp_path, tok):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        open_run(run_args(f), [], keep=set())
    with pytest.raises(UserError, match="cannot write in --out_dir"):
        open_run(run_args(f / "sub"), [], keep=set())


def test_resume_of_an_incomplete_or_foreign_run_is_one_line(tmp_path, tok):
    """train_sft.py --resume with the tokenizer removed, or on train_rl.py's run dir."""
    for d in (save_run(tmp_path / "run", tok), save_run(tmp_path / "run2", tok)):
        os.remove(os.path.join(d, RANKS_FILE))
    line = one_error_line(script("train_sft.py", "--out_dir", d, "--resume"))
    assert "tokenizer is missing or unreadable" in line
    with pytest.raises(UserError, match="tokenizer is missing or unreadable"):
        open_run(run_args(tmp_path / "run", resume=True), ["--resume"], keep=set())
    rl = save_run(tmp_path / "rl", tok, explore_reward="rlsp", kl_coef=0.01)
    with pytest.raises(UserError, match="a run of another script .*--explore_reward"):
        open_run(run_args(rl, resume=True), ["--resume"], keep=set())


def test_torn_log_line_is_dropped_on_resume(tmp_path):
    """A run killed mid-write leaves half a line in metrics.jsonl; --resume crashed on it."""
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    reset_logs(str(tmp_path), ("metrics.jsonl",), upto_step=2)
    assert [json.loads(x)["step"] for x in f.read_text().splitlines()] == [1, 2]


def test_abbreviated_flags_are_refused(capsys):
    """--max_step 300 was parsed as --max_steps, but --resume's explicit_flags did not know the
    name and replaced it with the saved value."""
    ap = ArgParser(prog="x")
    ap.add_argument("--max_steps", type=int, default=10)
    with pytest.raises(SystemExit):
        ap.parse_args(["--max_step", "300"])
    assert "unrecognized arguments: --max_step 300" in capsys.readouterr().err


# -----------------------------------------------------------------------------
# checkpoint integrity

def weight_record(path):
    """(offset, size) in ckpt.pt of the largest tensor record (a weight's bytes)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:   # the local header: 30 bytes, then the name and extra field
        f.seek(info.header_offset + 26)
        n, extra = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + n + extra, info.file_size


def test_corrupt_weight_bytes_are_refused(tmp_path, tok):
    """mmap loading skips the zip's CRC check: a damaged byte range in a weight loaded silently."""
    d = save_run(tmp_path / "run", tok)
    f = os.path.join(d, CKPT_NAME)
    off, size = weight_record(f)
    with open(f, "r+b") as fh:
        fh.seek(off + size // 2)
        fh.write(b"\x7f" * 16)
    with pytest.raises(CheckpointError, match="corrupt: model/.* fails its CRC32 check"):
        read_checkpoint(d)
    with pytest.raises(CheckpointError, match="CRC32"):
        load_model(d)
    r = script("eval.py", "--init_from", d, "--limit", "1")
    assert "fails its CRC32 check" in one_error_line(r)


def test_checkpoint_without_crcs_still_loads(tmp_path, tok):
    d = save_run(tmp_path / "run", tok)
    state = dict(read_checkpoint(d))
    del state["crc32"]
    torch.save(state, os.path.join(d, "old.pt"))   # not over the file the tensors map
    os.replace(os.path.join(d, "old.pt"), os.path.join(d, CKPT_NAME))
    model, _ = load_model(d)
    assert torch.equal(model.lm_head.weight, tiny_model(tok).lm_head.weight)


# -----------------------------------------------------------------------------
# model configs: every field's type and range, native and Hugging Face

@pytest.mark.parametrize("bad,match", [
    ({"n_layer": 200_000}, "n_layer must be an integer in"),
    ({"n_head": 0}, "n_head must be an integer in"),
    ({"n_embd": "128"}, "n_embd must be an integer in"),
    ({"vocab_size": [320]}, "vocab_size must be an integer in"),
    ({"n_head": 3}, "must divide by n_head"),
    ({"n_kv_head": 3}, "multiple of n_kv_head"),
    ({"rope_theta": "1e4"}, "rope_theta must be a positive number"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps must be a positive number"),
    ({"rope_scaling": ["llama3"]}, "rope_scaling has the wrong type"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": "8"}}, "llama3"),
])
def test_bad_model_config_is_one_line(tok, bad, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**bad)
    state = {"model": {}, "model_config": {**ModelConfig().to_dict(), "head_dim": 0, **bad}}
    with pytest.raises(CheckpointError, match="bad model config"):
        model_from_state(state)     # 200,000 layers: refused before GPT() allocates them


HF = {"architectures": ["LlamaForCausalLM"], "vocab_size": 320, "num_hidden_layers": 2,
      "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}


@pytest.mark.parametrize("bad", [
    {"num_attention_heads": 0}, {"num_hidden_layers": "2"}, {"hidden_size": [64]},
    {"num_hidden_layers": 200_000}, {"rope_scaling": ["llama3"]}, {"architectures": [{}]},
    {"quantization_config": "gptq"}, {"rope_theta": "x"},
])
def test_bad_hf_config_is_one_line(bad):
    assert config_from_hf(HF).head_dim == 16
    with pytest.raises(CheckpointError):
        config_from_hf({**HF, **bad})
    with pytest.raises(CheckpointError, match="not a JSON object"):
        config_from_hf([HF])


def test_chat_with_a_broken_config_json(tmp_path, tok):
    """A native dir's config.json is only read for the task's markers: broken, chat goes on;
    an HF dir's broken config.json is one line."""
    d = save_run(tmp_path / "run", tok)
    for text in ("{not json", "[1, 2]", '{"args": ["task"]}', '{"args": {"task": [1]}}'):
        open(os.path.join(d, "config.json"), "w").write(text)
        r = script("chat.py", "--init_from", d, "--max_new_tokens", "4", "--prompt", "1 + 1")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({**HF, "num_attention_heads": 0}))
    line = one_error_line(script("chat.py", "--init_from", str(hf_dir)))
    assert "config.json: inconsistent config (model config n_head must be" in line


def test_chat_over_a_pipe_goes_on_after_an_overlong_line(tmp_path, tok):
    d = save_run(tmp_path / "run", tok)
    r = script("chat.py", "--init_from", d, "--max_new_tokens", "4", "--no_history",
               input="1 + " * 400 + "\nWhat is 2 + 3?\n\xff\n")
    assert r.returncode == 0, r.stderr
    assert sum(ln.startswith("error: the question is") for ln in r.stderr.splitlines()) == 1
    assert sum(ln.startswith("[prompt ") for ln in r.stderr.splitlines()) == 2


# -----------------------------------------------------------------------------
# eval.py: outputs checked before the evaluation, never over a model; prompts that fit

def test_eval_refuses_to_write_over_a_model(tmp_path, tok):
    d = save_run(tmp_path / "run", tok)
    ckpt = open(os.path.join(d, CKPT_NAME), "rb").read()
    zip_named_json = tmp_path / "res.json"
    shutil.copy(os.path.join(d, CKPT_NAME), zip_named_json)
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"problem": "What is 1 + 1?", "answer": "2"}) + "\n")
    cases = [(["--out", os.path.join(d, CKPT_NAME)], "is a checkpoint"),
             (["--out", str(tmp_path / "r.json"), "--transcripts", os.path.join(d, RANKS_FILE)],
              "is a tokenizer file"),
             (["--out", os.path.join(d, "config.json")], "model dir's config file"),
             (["--out", str(zip_named_json)], "is a checkpoint (a zip file)"),
             (["--out", str(tmp_path / "a.json"), "--transcripts", str(tmp_path / "a.json")],
              "the same file"),
             (["--data", str(problems), "--transcripts", str(problems)], "is the --data file")]
    for argv, pattern in cases:
        assert pattern in one_error_line(script("eval.py", "--init_from", d, *argv)), argv
    assert open(os.path.join(d, CKPT_NAME), "rb").read() == ckpt
    assert load_model(d)[1].n_vocab == tok.n_vocab


def test_eval_checks_its_output_before_evaluating(tmp_path, tok):
    d = save_run(tmp_path / "run", tok)
    (tmp_path / "f").write_text("a file, not a directory")
    r = script("eval.py", "--init_from", d, "--out", str(tmp_path / "f" / "res.json"))
    assert "cannot be written" in one_error_line(r) and "eval " not in r.stdout
    out = tmp_path / "new" / "dir" / "res.json"     # a missing parent is created, as a save does
    r = script("eval.py", "--init_from", d, "--limit", "1", "--max_new_tokens", "2", "--out",
               str(out))
    assert r.returncode == 0 and json.loads(out.read_text())["n_problems"] == 1, r.stderr
    assert sorted(os.listdir(out.parent)) == ["res.json", "res.transcripts.jsonl"]   # no probe


def test_eval_refuses_a_prompt_longer_than_the_context(tmp_path, tok):
    d = save_run(tmp_path / "run", tok)
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"problem": "What is 1 + 1?", "answer": "2"}) + "\n" +
                    json.dumps({"problem": "1 + " * 5000, "answer": "1"}) + "\n")
    line = one_error_line(script("eval.py", "--init_from", d, "--data", str(data)))
    assert "problem 2 is" in line and "context (max_seq_len) 512" in line
