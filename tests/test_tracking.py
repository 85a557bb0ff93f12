"""--wandb on train_sft.py and train_rl.py (nanorlsp/tooling/tracking.py): every metrics.jsonl figure and
the transcripts reach Weights & Biases, offline (WANDB_MODE=offline, no network); without the
flag wandb is never imported.

The offline run is read back from its files: OUT_DIR/wandb/offline-run-*/run-ID.wandb holds the
logged records (W&B's record log: 32 KiB blocks of length/type-framed protobuf records, the
format `wandb sync` uploads) and files/media/table/ the tables as JSON.

    python -m pytest tests/test_tracking.py -q      # ~40 s on 2 busy cores; wandb tests skip
                                                     # without the package (pip install wandb)
"""
import glob
import json
import math
import os
import struct
import subprocess
import sys

import pytest
import torch

from data import get_task
from helpers import one_error_line
from nanorlsp.tooling import tracking
from nanorlsp.checkpoint import save_checkpoint
from nanorlsp.model import GPT, ModelConfig
from nanorlsp.tokenizer import build_tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RL = ["--prompts_per_step", "2", "--n_samples", "2", "--max_new_tokens", "12",
      "--eval_problems", "4", "--log_samples", "2", "--max_steps", "3", "--eval_interval", "2"]
SFT = ["--n_train", "300", "--n_val", "40", "--n_merges", "32", "--batch_size", "2",
       "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--n_kv_head", "1",
       "--eval_problems", "4", "--max_new_tokens", "24", "--log_interval", "2",
       "--warmup_steps", "2", "--max_steps", "4", "--eval_interval", "2"]


def run(script, *args, env=None, check=True):
    r = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def tiny_sft_checkpoint(d):
    rows = get_task("arith").make_sft_examples(200, seed=0)
    tok = build_tiny_tokenizer((r["prompt"] + r["response"] for r in rows), n_merges=16)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64 * math.ceil(tok.n_vocab / 64), n_layer=1, n_head=2,
                            n_kv_head=1, n_embd=32))
    save_checkpoint(str(d), model, tok, step=0, args={})
    return str(d)


def test_flatten():
    rec = {"step": 3, "loss": 0.5, "behaviors": {"backtracking": 0.25, "verification": 0.0},
           "val_style": {"search": {"frac": 0.5, "acc": 1.0}}, "val_level": {1: 0.5}}
    assert tracking.flatten(rec) == {"step": 3, "loss": 0.5, "behaviors/backtracking": 0.25,
                                     "behaviors/verification": 0.0, "val_style/search/frac": 0.5,
                                     "val_style/search/acc": 1.0, "val_level/1": 0.5}
    assert tracking.start(None, "/nowhere", {}, resume=False) is None
    tracking.log(None, rec)                 # no run: every call is a no-op
    tracking.log_samples(None, 3, [{"step": 3}])
    tracking.finish(None)


@pytest.mark.slow
def test_without_the_flag_wandb_is_never_imported(tmp_path):
    """A `wandb` that cannot be imported on the path: a run without --wandb does not notice;
    with --wandb it is one error line naming the package."""
    fake = tmp_path / "fake"
    (fake / "wandb").mkdir(parents=True)
    (fake / "wandb" / "__init__.py").write_text("raise ImportError('this wandb may not be imported')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake), ROOT])}
    run("train_sft.py", *SFT, "--max_steps", "2", "--out_dir", str(tmp_path / "a"), env=env)
    r = run("train_sft.py", *SFT, "--max_steps", "2", "--out_dir", str(tmp_path / "b"),
            "--wandb", "p", env=env, check=False)
    assert "--wandb needs the wandb package: pip install wandb" in one_error_line(r)


# -----------------------------------------------------------------------------
# offline W&B runs, read back from their files

def wandb_records(path):
    """The protobuf records of a .wandb file: a 7-byte header (':W&B', magic, version), then
    32 KiB blocks of records framed as (crc32, length u16, type u8: 1 full, 2 first, 3 middle,
    4 last); a block's last < 7 bytes are padding."""
    from wandb.proto import wandb_internal_pb2 as pb
    raw = open(path, "rb").read()
    assert raw[:4] == b":W&B", raw[:7]
    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if n == 0 and kind == 0:
            break
        buf += raw[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def offline_history(out_dir):
    """(run id, {step: {key: value}}, [table files]) of the one offline run in out_dir/wandb."""
    dirs = sorted(glob.glob(os.path.join(out_dir, "wandb", "offline-run-*")))
    assert dirs, os.listdir(out_dir)
    history = {}
    run_id = None
    for d in dirs:
        [f] = glob.glob(os.path.join(d, "run-*.wandb"))
        run_id = os.path.basename(f)[4:-6]
        for rec in wandb_records(f):
            if rec.WhichOneof("record_type") == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                       for i in rec.history.item}
                history.setdefault(row["_step"], {}).update(row)
    tables = sorted(glob.glob(os.path.join(dirs[-1], "files", "media", "table", "*.table.json")))
    return run_id, history, tables


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory):
    """A train_rl.py and a train_sft.py run with --wandb, offline; W&B's own folders in tmp."""
    pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("wandb_runs")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
           **{f"WANDB_{k}_DIR": str(root / k.lower()) for k in ("CONFIG", "CACHE", "DATA")}}
    sft = tiny_sft_checkpoint(root / "init")
    rl_dir, sft_dir = str(root / "rl"), str(root / "sft")
    run("train_rl.py", *RL, "--init_from", sft, "--out_dir", rl_dir, "--wandb", "nanorlsp-test",
        env=env)
    run("train_sft.py", *SFT, "--out_dir", sft_dir, "--wandb", "nanorlsp-test", env=env)
    return {"rl": rl_dir, "sft": sft_dir, "init": sft, "env": env}


def metrics_rows(out_dir, name="metrics.jsonl"):
    return [json.loads(x) for x in open(os.path.join(out_dir, name))]


def assert_history_holds(out_dir, history):
    """Every metrics.jsonl figure, flattened, at its own step with its own value."""
    rows = metrics_rows(out_dir)
    assert rows
    for rec in rows:
        got = history.get(rec["step"])
        assert got is not None, f"step {rec['step']} not in W&B history {sorted(history)}"
        for k, v in tracking.flatten(rec).items():
            if k != "step":
                assert k in got, f"step {rec['step']}: {k} not logged"
                assert got[k] == pytest.approx(v, rel=1e-12), k
    return rows


@pytest.mark.slow
def test_rl_run_logs_every_figure_and_the_transcripts(offline_runs):
    d = offline_runs["rl"]
    run_id, history, tables = offline_history(d)
    assert open(os.path.join(d, "wandb_run_id")).read().strip() == run_id
    rows = assert_history_holds(d, history)
    # the per-step keys train_rl.py logs now, nested behaviours flattened, eval merged in
    step1 = history[1]
    for k in ("reward", "acc", "kl", "flat_groups", "no_answer", "logp_diff", "grad_norm",
              "updates", "behaviors/backtracking"):
        assert k in step1, k
    assert "val_acc" in history[0] and "val_acc" in history[2] and "reward" in history[2]
    assert {r["step"] for r in rows} == set(history)
    # transcripts: one table per step, the same rows as samples.jsonl
    samples = metrics_rows(d, "samples.jsonl")
    assert len(tables) == 3
    for step in (1, 2, 3):
        [t] = [t for t in tables if os.path.basename(t).startswith(f"samples_{step}_")]
        table = json.load(open(t))
        assert table["columns"] == list(tracking.SAMPLE_COLUMNS)
        want = [[s[c] for c in tracking.SAMPLE_COLUMNS] for s in samples if s["step"] == step]
        assert len(want) == 2
        assert table["data"] == want
        assert history[step]["samples/_type"] == "table-file"


@pytest.mark.slow
def test_sft_run_logs_every_figure(offline_runs):
    d = offline_runs["sft"]
    _, history, tables = offline_history(d)
    rows = assert_history_holds(d, history)
    assert {"loss", "lr", "grad_norm", "tok_per_s"} <= set(history[2])
    assert {"val_loss", "val_acc"} <= set(history[4])
    assert [r["step"] for r in rows if "val_loss" in r] == [2, 4] and not tables


@pytest.mark.slow
def test_resume_continues_the_same_wandb_run(offline_runs):
    d, env = offline_runs["rl"], offline_runs["env"]
    run_id = open(os.path.join(d, "wandb_run_id")).read().strip()
    run("train_rl.py", "--out_dir", d, "--resume", "--max_steps", "4", env=env)
    assert open(os.path.join(d, "wandb_run_id")).read().strip() == run_id
    dirs = sorted(glob.glob(os.path.join(d, "wandb", "offline-run-*")))
    assert len(dirs) == 2 and all(x.endswith("-" + run_id) for x in dirs)
    _, history, _ = offline_history(d)
    assert "reward" in history[4]
