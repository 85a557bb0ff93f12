"""
experiments/smollm2.py: the resumable SmolLM2 driver. Its pure parts (the long SFT's stopping
rule, the diag grid, the best-checkpoint swap after a kill, the flags it refuses), then the whole
pipeline on the tiny model (--smoke): killed mid-run with its process group, rerun, it resumes the
cut run (whose weights then equal an uninterrupted run's), finishes every output and writes the
report's table; a third invocation launches nothing.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join("experiments", "smollm2.py")    # run from the repo root, as documented


def driver():
    spec = importlib.util.spec_from_file_location("smollm2", os.path.join(ROOT, DRIVER))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_best_and_stop():
    best_and_stop = driver().best_and_stop
    assert best_and_stop([], 3, 100) == (None, None, False)
    ev = [(20, 0.30), (40, 0.35), (60, 0.35), (80, 0.34)]
    # ties keep the first step; two evals since the best: not stopped at patience 3
    assert best_and_stop(ev, 3, 600) == (40, 0.35, False)
    assert best_and_stop(ev + [(100, 0.2)], 3, 600) == (40, 0.35, True)
    assert best_and_stop(ev, 3, 80) == (40, 0.35, True)          # the horizon
    assert best_and_stop(ev + [(100, 0.4)], 1, 600) == (100, 0.4, False)


def test_update_json_keeps_every_entry_under_parallel_jobs(tmp_path, monkeypatch):
    """--jobs N finishes jobs on N threads at once; each adds its entry to evals.json and its
    time to times.json. A slow read (here 50 ms) widens the window in which an unguarded
    read-modify-write loses entries: none may be lost."""
    import threading
    m = driver()
    read = m.read
    monkeypatch.setattr(m, "read", lambda p: (time.sleep(0.05), read(p))[1])
    path = str(tmp_path / "evals.json")
    threads = [threading.Thread(target=m.update_json, args=(path, f"e{i}.json", lambda _, i=i: i))
               for i in range(8)] + [threading.Thread(target=m.update_json,
                                                      args=(path, "t", lambda v: (v or 0) + 1))
                                     for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.load(open(path)) == {"t": 4, **{f"e{i}.json": i for i in range(8)}}


def test_grid_one_factor_at_a_time_and_full():
    m = driver()
    a = m.parse_args(["diag", "--lr", "2e-5,1e-6", "--n_samples", "4,8", "--temperature", "1.0",
                      "--kl_coef", "0.05", "--loss_agg", "token_mean", "--sft", "sft70,best"])
    g = m.grid(a)
    assert len(g) == 4 and g[0] == dict(lr="2e-5", n_samples="4", temperature="1.0",
                                        kl_coef="0.05", policy_loss="reinforce",
                                        loss_agg="token_mean", explore_reward="none", sft="sft70")
    assert [{k: v for k, v in c.items() if v != g[0][k]} for c in g[1:]] == [
        {"lr": "1e-6"}, {"n_samples": "8"}, {"sft": "best"}]
    assert len({m.diag_name(c) for c in g}) == 4
    a.grid = "full"
    assert len(m.grid(a)) == 8
    # the config's flags come after the base flags (argparse: the last one wins)
    f = m.rl_flags(a, g[1])
    assert f[f.index("--lr", f.index("--seed")) + 1] == "1e-6" and "--sft" not in f


def test_merged_flags_keep_the_last_value():
    merged = driver().merged
    assert merged("--lr 2e-5 --std_norm --n_samples 4 --lr 1e-6 --kl_coef -0.5".split()) == \
        "--std_norm --n_samples 4 --lr 1e-6 --kl_coef -0.5".split()


def test_dry_run_prints_the_real_commands_and_writes_nothing(tmp_path):
    """The real recipe's commands (SmolLM2, the documented flags, the dtype), as the next
    session would start them; nothing is created."""
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, DRIVER, "all", "--dry_run", "--dtype", "float32",
                        "--out_dir", str(out), "--results_dir", str(tmp_path / "r"),
                        "--recipe", "--lr 1e-6 --n_samples 8"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.startswith("[dry run] ")]
    sft = [x for x in lines if "sft/sft70: train_sft.py" in x][0]
    assert "--init_from smollm2" in sft and "--max_steps 70" in sft and "--dtype float32" in sft
    assert "--decay_steps 600 --eval_interval 20 --eval_problems 200 --eval_offset 500" in \
        [x for x in lines if "sft/sft_long:" in x][0]   # sft_best is never picked on the test set
    diag = [x for x in lines if "diag/" in x and "train_rl.py" in x]
    assert len(diag) == 9 and all(x.count("--lr ") == 1 for x in diag)
    final = [x for x in lines if "final/rl_rlsp_paper: train_rl.py" in x][0]
    assert "--lr 1e-6" in final and "--n_samples 8" in final and "--lr 2e-5" not in final
    evals = [x for x in lines if x.startswith("[dry run] eval/")]
    assert len(evals) == 15 and "eval/base.arith: eval.py --init_from smollm2" in evals[0]
    assert not out.exists() and not (tmp_path / "r").exists()


def test_best_copy_survives_a_kill_anywhere(tmp_path):
    """keep_best's swap (tmp built, best.json last, renames): whichever moment a kill hits,
    fix_best leaves one complete sft_best, the newest that was complete."""
    m = driver()
    a = m.parse_args(["sft", "--out_dir", str(tmp_path)])
    dst = m.sft_dir(a, "best")

    def make(path, step, done=True):
        os.makedirs(path)
        open(os.path.join(path, "ckpt.pt"), "w").write(str(step))
        if done:
            open(os.path.join(path, "best.json"), "w").write(json.dumps({"step": step}))

    # killed while copying: the old copy stays
    make(dst, 20), make(dst + ".tmp", 40, done=False)
    m.fix_best(a)
    assert json.load(open(os.path.join(dst, "best.json")))["step"] == 20
    assert sorted(os.listdir(tmp_path)) == ["sft_best"]
    # killed after the old one moved aside, before the new one moved in: the new one wins
    os.replace(dst, dst + ".old"), make(dst + ".tmp", 40)
    m.fix_best(a)
    assert json.load(open(os.path.join(dst, "best.json")))["step"] == 40
    assert sorted(os.listdir(tmp_path)) == ["sft_best"]
    # killed with the old one aside and no complete new one: the old one comes back
    os.replace(dst, dst + ".old")
    m.fix_best(a)
    assert json.load(open(os.path.join(dst, "best.json")))["step"] == 40


def test_bad_flags_are_one_line(tmp_path):
    for argv, msg in ((["final", "--recipe", "--lr 1e-6 --max_steps 5"], "--recipe may not hold"),
                      (["nope"], "unknown stage"),
                      (["diag", "--lr", "1e-5,fast"], "--lr must be comma-separated numbers"),
                      (["final", "--recipe", "--explore_reward rlsp"], "--final_rewards names"),
                      (["final", "--final_rewards", "none,foo"], "--final_rewards: unknown"),
                      ([], "name a stage"),
                      (["final", "--out_dir", str(tmp_path / "o")], "run the sft stage first")):
        r = subprocess.run([sys.executable, DRIVER, *argv], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode != 0 and msg in r.stderr, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def weights(run_dir):
    return torch.load(os.path.join(run_dir, "ckpt.pt"), map_location="cpu",
                      weights_only=True)["model"]


@pytest.mark.slow
def test_smoke_stop_restart_and_report(tmp_path):
    out, res = tmp_path / "out", tmp_path / "res"
    cmd = [sys.executable, DRIVER, "all", "--smoke", "--dtype", "float32", "--out_dir", str(out),
           "--results_dir", str(res), "--final_rewards", "none,rlsp", "--final_steps", "6"]
    # killed (SIGKILL, its whole process group) once the verifier-only run's first checkpoint
    # (step 2 of 6) is written: a stop at any moment, mid-run
    cut = out / "final" / "rl_verifier" / "ckpt.pt"
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    t0 = time.time()
    while not cut.exists() and p.poll() is None and time.time() - t0 < 600:
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    first = p.communicate()[0]
    assert cut.exists(), first[-3000:]
    assert not (res / "README.md").exists()
    # the rerun resumes the cut run and finishes the pipeline
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    resumed = [x for x in r.stdout.splitlines() if "final/rl_verifier: train_rl.py" in x]
    assert resumed and "--resume" in resumed[0], r.stdout[-3000:]
    assert not [x for x in r.stdout.splitlines() if re.search(r"\] sft/(base|sft70): ", x)]
    # ... to the weights an uninterrupted run of the same command reaches
    log = open(out / "logs" / "final_rl_verifier.log").read().splitlines()
    straight = log[0][2:].split()
    straight[straight.index("--out_dir") + 1] = str(tmp_path / "straight")
    s = subprocess.run(straight, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert s.returncode == 0, s.stderr[-2000:]
    a, b = weights(out / "final" / "rl_verifier"), weights(tmp_path / "straight")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # every output, with its dtype recorded; the run's config records it too
    meta = json.load(open(res / "evals.json"))
    for name in ("base", "sft", "rl_verifier", "rl_rlsp"):
        for f in (f"{name}.json", f"{name}.gsm8k.json"):
            assert (res / f).exists() and (res / f.replace(".json", ".transcripts.jsonl")).exists()
            assert meta[f]["dtype"] == "float32"
    cfg = json.load(open(out / "final" / "rl_rlsp" / "config.json"))["args"]
    assert (cfg["dtype"], cfg["explore_reward"], cfg["max_steps"]) == ("float32", "rlsp", 6)
    # sft_best is the long SFT's best held-out step
    ev = [json.loads(x) for x in open(out / "sft_long" / "metrics.jsonl")]
    accs = [(e["step"], e["val_acc"]) for e in ev if "val_acc" in e]
    best = json.load(open(out / "sft_best" / "best.json"))
    assert best["step"] == max(accs, key=lambda x: (x[1], -x[0]))[0]
    # the report's table: a row per checkpoint, pass@1 from its JSON, paired vs SFT
    text = open(res / "README.md").read()
    rows = {x.split(" | ")[0][2:]: x.split(" | ") for x in text.splitlines()
            if x.startswith("| ") and not x.startswith(("| checkpoint", "| ---"))}
    assert list(rows) == ["base", "sft", "rl_verifier", "rl_rlsp"]
    for name, row in rows.items():
        e = json.load(open(res / f"{name}.json"))
        assert row[1].startswith(f"{100 * e['pass@1']:.1f} [")
        assert row[2] == "-" if name == "sft" else re.fullmatch(
            r"[+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\]\*?", row[2]), row
        assert len(row[3].split(" / ")) == 5 and row[-1] == "float32 |"
    assert "| rl_rlsp | " in r.stdout                      # printed too
    # the diag table: the run's diagnostics over its steps
    diag = open(out / "diag.md").read().splitlines()
    assert diag[0].startswith("| run | steps | acc | flat_groups | no_answer | kl | entropy")
    assert diag[2].split(" | ")[1] == "4"
    assert diag[0].endswith("| held-out acc | SFT acc | vs SFT (points, paired) |")
    assert re.fullmatch(r"[+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\]\*? \|", diag[2].split(" | ")[-1])
    # finished: a third invocation launches nothing
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and not re.search(r"^\[\d", again.stdout, re.M), again.stdout
