"""
experiments/study.py end to end at toy size: SFT, RL runs for four rewards (one adaptive with
its own threshold, one an exploration strength), two RL objectives (seq_mean, DAPO) and PPO on
the best of the paper's, their evaluations, RESULTS.md with its tables and figures; a second
invocation redoes nothing.
Marked slow (about a minute on 2 cores).
"""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join("experiments", "study.py")    # run from the repo root, as documented


@pytest.mark.slow
def test_study_small(tmp_path):
    # the report in experiments/ as in the repo: its figures go to ../docs/study/ from there
    out, res = str(tmp_path / "study"), str(tmp_path / "experiments" / "RESULTS.md")
    cmd = [sys.executable, STUDY, "--tasks", "arith", "--seeds", "1,2", "--steps", "2",
           "--sft_steps", "20", "--limit", "6",
           "--rewards", "none,rlsp,adaptive_0.5,rlsp@1,none@seq_mean,dapo",
           "--jobs", "2", "--passk_problems", "3", "--passk_samples", "4",
           "--out_dir", out, "--results", res, "--smol_dir", str(tmp_path / "no_smol"), "--rl_flags",
           "--prompts_per_step 2 --n_samples 2 --max_new_tokens 12 --eval_problems 0"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    text = open(res).read()
    for label in ("SFT only", "RL verifier only (none)", "RL rlsp", "RL adaptive (threshold 0.5)",
                  "PPO rlsp"):
        assert f"| {label}" in text, label
    assert "adaptive thinking vs plain RLSP" in text
    # the goal table: the difference from RLSP with its paired 95% interval (nanorlsp/tooling/stats.py)
    assert re.search(r"\| adaptive \(0\.5\) \| [\d.]+ \| [+-][\d.]+ \| "
                     r"\[[+-][\d.]+, [+-][\d.]+\]\*? \|", text), \
        text.split("Against the goal")[-1][:800]
    # what emerged: each behaviour in the SFT data vs after RLSP; SmolLM2's evals are absent here
    for b in ("backtracking", "verification", "alternatives"):
        assert f"| {b} | " in text.split("## What emerged")[1], b
    assert "Not found in" in text.split("## A real model")[1]
    # the exploration-strength sweep: rlsp@1's coef is 1 x L_typical, measured once from SFT
    lt = json.load(open(os.path.join(out, "arith", "sft", "l_typical.json")))
    assert lt["tokens"] > 0 and 0 <= lt["share_reasoning"] <= 1 and lt["samples"] == 6 * 8
    cfg = json.load(open(os.path.join(out, "arith", "rlsp@1_s1", "config.json")))["args"]
    assert (cfg["explore_reward"], cfg["explore_coef"]) == ("rlsp", pytest.approx(lt["tokens"]))
    sweep = text.split("### arith: exploration strength")[1].split("###")[0]
    assert [r.split(" | ")[0] for r in sweep.splitlines() if r.startswith("| ")][1:] == \
        ["| 0", f"| {0.5 / lt['tokens']:.3g} (default coef)", "| 1"]
    # the sweep's greedy no-answer share is the checker's (no \boxed it can read), not eval.py's
    # answer field, which falls back to a reply's last number: replies cut at 12 tokens have none
    from data import arith
    none = [arith.answer_start(json.loads(x)["response"]) is None for s in (1, 2) for x in open(
        os.path.join(out, "arith", f"rlsp@1_s{s}", "eval_greedy.transcripts.jsonl"))]
    row = [r for r in sweep.splitlines() if r.startswith("| 1 |")][0].split(" | ")
    assert row[6].split(" / ")[1] == f"{100 * sum(none) / len(none):.1f}"
    # pass@k: SFT, verifier only and the best RLSP config (rlsp or rlsp@1), k = 1..4
    passk = text.split("### arith: pass@k, k = 1..4")[1].split("###")[0]
    rows = [r for r in passk.splitlines() if r.startswith("| ") and not r.startswith("| model")]
    assert [r.split(" | ")[0] for r in rows[:2]] == ["| SFT", "| verifier only (none)"]
    assert rows[2].startswith(("| best RLSP: rlsp |", "| best RLSP: rlsp, strength 1 |"))
    assert rows[1].split(" | ")[1] == "2" and "vs SFT:" in passk
    e = json.load(open(os.path.join(out, "arith", "none_s1", "eval_passk.json")))
    assert (e["n_problems"], e["n_samples"], e["temperature"]) == (3, 4, 1.0)
    assert e["pass@1"] <= e["pass@2"] <= e["pass@3"] <= e["pass@4"]
    for name in ("training", "levels", "strength", "passk"):
        assert os.path.exists(tmp_path / "docs" / "study" / f"arith_{name}.png")
        assert f"](../docs/study/arith_{name}.png)" in text, name   # linked where it is
    assert "over training (rollouts at T = 1" in text
    runs = set(os.listdir(os.path.join(out, "arith")))
    ppo = {d for d in runs if d.startswith("ppo_")}
    assert ppo == {"ppo_rlsp_s1", "ppo_rlsp_s2"}   # PPO takes the best of the paper's rewards
    assert runs - ppo == {"sft", "none_s1", "none_s2", "rlsp_s1", "rlsp_s2", "adaptive_0.5_s1",
                          "adaptive_0.5_s2", "rlsp@1_s1", "rlsp@1_s2", "none@seq_mean_s1",
                          "none@seq_mean_s2", "dapo_s1", "dapo_s2"}
    cfg = json.load(open(os.path.join(out, "arith", "adaptive_0.5_s1", "config.json")))["args"]
    assert (cfg["explore_reward"], cfg["explore_schedule"], cfg["acc_threshold"]) == \
        ("rlsp", "adaptive", 0.5)
    for d in runs:
        assert os.path.exists(os.path.join(out, "arith", d, "eval_greedy.json")), d
    check_objectives(out, res, text, cmd)
    # the recorded job time: every job's commands, summed, per task, printed and in the header
    logs = os.path.join(out, "logs")
    secs = [json.load(open(os.path.join(logs, f))) for f in os.listdir(logs) if f.endswith(".seconds")]
    runs = set(os.listdir(os.path.join(out, "arith")))
    assert len(secs) == len(runs) + 5          # a job per run, and 5 pass@k jobs
    assert all(x["task"] == "arith" and x["seconds"] > 0 for x in secs)
    total = sum(x["seconds"] for x in secs) / 3600
    assert f"arith {total:.1f} h; total {total:.1f} h." in text
    assert re.search(r"recorded job time [\d.]+ h \(arith [\d.]+ h\), this invocation", r.stdout)
    # everything is finished: a rerun launches nothing
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert not [line for line in again.stdout.splitlines() if line.startswith("[")], again.stdout


@pytest.mark.slow
def test_study_plain_variant(tmp_path):
    """Item 3's variant: arith_plain trains SFT on direct and plain-steps traces only (the run's
    config says so), RL runs on the arith task, and RESULTS.md reads the behaviours functionally
    in the demonstrations (full mix and restricted), SFT and RL samples, with no
    marker-based 'What emerged' table for the variant."""
    out, res = str(tmp_path / "study"), str(tmp_path / "experiments" / "RESULTS.md")
    cmd = [sys.executable, STUDY, "--tasks", "arith_plain", "--seeds", "1", "--steps", "2",
           "--sft_steps", "10", "--limit", "4", "--rewards", "none,rlsp", "--no_ppo",
           "--out_dir", out, "--results", res, "--smol_dir", str(tmp_path / "no_smol"),
           "--rl_flags", "--prompts_per_step 2 --n_samples 2 --max_new_tokens 12 --eval_problems 0"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = os.path.join(out, "arith_plain")
    sft = json.load(open(os.path.join(d, "sft", "config.json")))["args"]
    assert (sft["task"], sft["styles"]) == ("arith", "direct,steps")
    assert json.load(open(os.path.join(d, "none_s1", "config.json")))["args"]["task"] == "arith"
    assert sorted(os.listdir(d)) == ["none_s1", "rlsp_s1", "sft"]     # no pass@k stage
    text = open(res).read()
    sec = text.split("## Emergence, tested")[1].split("## A real model")[0]
    head = [r for r in sec.splitlines() if r.startswith("| behaviour")][0]
    assert head.split(" | ")[1:] == ["demonstrations, full mix", "demonstrations, direct,steps",
                                     "SFT samples", "none samples", "rlsp samples |"]
    rows = {r.split(" | ")[0][2:]: r.split(" | ")[1:] for r in sec.splitlines()
            if r.startswith(("| backtracking", "| verification", "| alternatives"))}
    assert set(rows) == {"backtracking", "verification", "alternatives"}
    # the full mix shows ~10% each of verification and backtracking; the restricted data none
    for b in ("backtracking", "verification"):
        assert 5 < float(rows[b][0]) < 15 and float(rows[b][1]) == 0.0, rows[b]
    assert "arith_plain" not in text.split("## What emerged")[1].split("## Emergence")[0]
    assert "| PPO" not in text     # --no_ppo: no empty row for the best paper reward's PPO


@pytest.mark.slow
def test_study_countdown_small(tmp_path):
    """Item 2's task: countdown_small trains and evaluates on its own problems (numbers in 1..9),
    its strength config reads L_typical from its SFT samples, and 'What emerged' reports the
    wrong search steps of that config's samples (the task has no default-coef rlsp run)."""
    out, res = str(tmp_path / "study"), str(tmp_path / "experiments" / "RESULTS.md")
    cmd = [sys.executable, STUDY, "--tasks", "countdown_small", "--seeds", "1", "--steps",
           "2", "--sft_steps", "10", "--limit", "4", "--no_ppo", "--out_dir", out,
           "--results", res, "--smol_dir", str(tmp_path / "no_smol"),
           "--rl_flags", "--prompts_per_step 2 --n_samples 2 --max_new_tokens 24 --eval_problems 0"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    d = os.path.join(out, "countdown_small")
    sft = json.load(open(os.path.join(d, "sft", "config.json")))["args"]
    assert sft["task"] == "countdown_small"
    assert sorted(os.listdir(d)) == ["none_s1", "rlsp@0.3_s1", "sft"]
    rl = json.load(open(os.path.join(d, "rlsp@0.3_s1", "config.json")))["args"]
    lt = json.load(open(os.path.join(d, "sft", "l_typical.json")))["tokens"]
    assert rl["task"] == "countdown_small"
    assert rl["explore_coef"] == pytest.approx(0.3 * lt, rel=1e-5)
    ev = json.load(open(os.path.join(d, "sft", "eval_t1.json")))
    assert ev["task"] == "countdown_small" and "wrong_step_share" in ev
    rows = [json.loads(x) for x in open(os.path.join(d, "sft", "eval_t1.transcripts.jsonl"))]
    assert all(max(map(int, re.findall(r"\d+", x["problem"].split("reach")[0]))) <= 9 for x in rows)
    sec = open(res).read().split("## What emerged")[1].split("\n## ")[0]
    assert "### countdown_small" in sec and "RLSP (rlsp, strength 0.3) samples" in sec
    assert "Search steps (`a op b = c`) whose arithmetic is wrong" in sec


def check_objectives(out: str, res: str, text: str, cmd: list[str]):
    """test_study_small's RL-objective configs: their flags reach train_rl.py, and the section
    shows every finished config with its paired intervals; --objectives --report rewrites that
    section in place and leaves the rest of the file alone."""
    def args(run: str) -> dict:
        return json.load(open(os.path.join(out, "arith", run, "config.json")))["args"]
    a = args("none@seq_mean_s1")
    assert (a["explore_reward"], a["loss_agg"], a["policy_loss"]) == \
        ("none", "seq_mean", "reinforce")
    a = args("dapo_s2")
    assert (a["explore_reward"], a["policy_loss"], a["clip"], a["clip_high"], a["loss_agg"],
            a["dynamic_sampling"], a["updates_per_batch"]) == \
        ("none", "clip", 0.2, 0.28, "token_mean", True, 2)
    assert a["overlong_buffer"] == 12 // 5          # the last 20% of --max_new_tokens 12
    start = text.index("### arith: the RL objective (loss aggregation, DAPO, GSPO)\n")
    end = text.index("\n#", start) + 1                   # the next heading
    sec = text[start:end]
    rows = {r.split(" | ")[0][2:]: r.split(" | ")[1:] for r in sec.splitlines()
            if r.startswith("| ") and not r.startswith("| config")}
    assert list(rows) == ["SFT", "verifier only, token_mean", "rlsp, token_mean (default)",
                          "verifier only, seq_mean", "DAPO, verifier only"]
    ci = r"[+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\]\*?"
    assert rows["verifier only, seq_mean"][0] == "`--explore_reward none --loss_agg seq_mean`"
    for name in ("verifier only, seq_mean", "DAPO, verifier only"):   # vs rlsp, vs none
        assert re.fullmatch(ci, rows[name][3]) and re.fullmatch(ci, rows[name][4]), rows[name]
    assert rows["rlsp, token_mean (default)"][3] == "-" and re.fullmatch(
        ci, rows["rlsp, token_mean (default)"][4])
    assert "**Length.**" in sec and "prompts on average" in sec
    assert "](../docs/study/objectives_arith.png)" in sec
    assert os.path.exists(os.path.join(os.path.dirname(os.path.dirname(res)), "docs", "study",
                                       "objectives_arith.png"))
    # --objectives --report: only the section is rewritten, in place, under its heading as
    # edited by hand
    heading = sec.split("\n")[0] + " (item 2)\n"
    kept = text[:start] + heading + "old table\n\n" + text[end:] + "\nhand-written note\n"
    open(res, "w").write(kept)
    r = subprocess.run(cmd + ["--objectives", "--report"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    fresh = heading + sec.split("\n", 1)[1]        # the generated section under the kept heading
    assert open(res).read() == kept.replace(heading + "old table\n\n", fresh)


def test_study_objectives_report_keeps_results_without_runs(tmp_path):
    """--objectives --report before any RL-objective run has finished leaves RESULTS.md as it
    is (no empty section heading appended)."""
    res = tmp_path / "experiments" / "RESULTS.md"
    res.parent.mkdir()
    res.write_text("# RESULTS\n\nhand-written\n")
    r = subprocess.run([sys.executable, STUDY, "--tasks", "arith", "--objectives", "--report",
                        "--out_dir", str(tmp_path / "study"), "--results", str(res)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert res.read_text() == "# RESULTS\n\nhand-written\n"
    assert "no RL-objective run has finished" in r.stdout


def test_study_report_refuses_to_replace_hand_kept_results(tmp_path):
    """The whole-file report would erase a RESULTS.md with hand-written sections (the committed
    one has several): study.py refuses before any run, with one line, and leaves the file as it
    is; a report it wrote itself (its marker first line) it replaces."""
    res = tmp_path / "experiments" / "RESULTS.md"
    res.parent.mkdir()
    res.write_text("# RESULTS\n\nhand-written\n")
    cmd = [sys.executable, STUDY, "--tasks", "arith", "--out_dir", str(tmp_path / "study"),
           "--results", str(res), "--smol_dir", str(tmp_path / "no_smol")]
    r = subprocess.run(cmd + ["--report"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and res.read_text() == "# RESULTS\n\nhand-written\n"
    assert "study.py did not write" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "study" / "arith").exists()            # refused before any run
    # without --report the same: the check comes before the SFT run, not after hours of runs
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and not (tmp_path / "study" / "arith").exists()
    # a report study.py wrote (here from no runs) is replaced by the next one
    fresh = tmp_path / "fresh" / "RESULTS.md"
    cmd[cmd.index(str(res))] = str(fresh)
    for _ in range(2):
        r = subprocess.run(cmd + ["--report"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert fresh.read_text().startswith("<!-- written by experiments/study.py")
