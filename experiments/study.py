"""
The RLSP study at small scale: every run, evaluation, table and figure of RESULTS.md.

    python experiments/study.py                          # the whole study, from scratch, resumable
    python experiments/study.py --tasks arith --seeds 1  # a smaller one
    python experiments/study.py --report                 # only rewrite RESULTS.md from the runs
    python experiments/study.py --tasks arith --seeds 1 --results out/study/RESULTS.md
                                # beside the committed RESULTS.md, which study.py will not replace
    python experiments/study.py --tasks arith --objectives  # the RL objective's section

Per task, with its own BUDGET below (the same for all of its configs): SFT once; RL from it per
reward and seed (verifier only, rlsp, linear, cosine, adaptive, the economy terms, the
exploration-strength sweep rlsp@S, the RL objectives R@AGG, dapo and gspo, then PPO with the
best REINFORCE reward); every checkpoint evaluated on held-out problems (greedy, k samples at
T = 1, pass@k curves); then RESULTS.md's tables (mean and spread over seeds) and docs/study/'s
figures. Each config in full: docs/rl.md.
Footguns: run it from the repo root (--out_dir is relative to the cwd and the jobs it starts run
at the root); a finished step under out/study/<task>/ is never redone, an interrupted run
resumes; --jobs N runs N jobs of cores / N threads each (the tiny model on a 2-core box: 2 jobs
of 1 thread beat 1 job of 2 threads).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# this script lives in experiments/: the repo root holds the package and the scripts it runs
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # imports `nanorlsp` and `data` from the repo root, from any cwd

from nanorlsp.checkpoint import has_checkpoint, read_checkpoint  # noqa: E402

ap = argparse.ArgumentParser(description="The RLSP ablation study: runs, evals, RESULTS.md.")
ap.add_argument("--out_dir", default="out/study")
ap.add_argument("--tasks", default="arith,countdown,arith_plain,countdown_plain",
                help="BUDGET keys: a task, or a variant of one (*_plain: SFT without "
                     "verification or backtracking traces)")
ap.add_argument("--seeds", default="1,2,3", help="RL seeds (one SFT checkpoint per task)")
ap.add_argument("--steps", type=int, default=None,
                help="RL steps per run, every task (default: the task's BUDGET)")
ap.add_argument("--rewards", default=None,
                help="comma-separated: none, rlsp, linear, cosine, adaptive[_THRESHOLD] "
                     "(default: the task's BUDGET)")
ap.add_argument("--sft_steps", type=int, default=None,
                help="train_sft.py steps, every task (default: the task's BUDGET)")
ap.add_argument("--limit", type=int, default=None,
                help="held-out problems per evaluation, every task (default: the task's BUDGET)")
ap.add_argument("--rl_flags", default="", help="extra train_rl.py flags for every run (quoted)")
ap.add_argument("--no_ppo", action="store_true", help="skip stage 3 (PPO with the best reward)")
ap.add_argument("--objectives", action="store_true",
                help="the RL-objective study: --rewards defaults to none, rlsp and OBJECTIVES "
                     "below, no PPO or pass@k stage, and the report rewrites only its section "
                     "of --results")
ap.add_argument("--passk_problems", type=int, default=None,
                help="stage 4's held-out problems per task (default: PASSK below)")
ap.add_argument("--passk_samples", type=int, default=None,
                help="stage 4's samples per problem, the largest k (default 64)")
ap.add_argument("--jobs", type=int, default=2, help="runs at once")
ap.add_argument("--report", action="store_true", help="only rewrite RESULTS.md")
ap.add_argument("--results", default="experiments/RESULTS.md",
                help="the report; its figures go to ../docs/study/ from its folder")
ap.add_argument("--smol_dir", default="out/smol", help="the SmolLM2 evals (README commands)")
args = ap.parse_args()
# The whole-file report replaces --results. A file that holds text study.py did not write (the
# committed RESULTS.md has hand-written sections) would lose it, so that is refused here, before
# any run starts; --objectives splices only its own section and may.
MARKER = "<!-- written by experiments/study.py: its next run replaces this whole file -->"
if not args.objectives and os.path.exists(args.results):
    with open(args.results) as f:
        if f.readline().rstrip("\n") != MARKER:
            ap.error(f"{args.results} holds text study.py did not write, which rewriting it would "
                     "lose: pass --results PATH for this report (e.g. out/study/RESULTS.md)")

TASKS = args.tasks.split(",")
SEEDS = [int(s) for s in args.seeds.split(",")]
OUT = args.out_dir
# the report's figures, relative to its folder: docs/study/ is ../docs/study/ from experiments/
# (relative links render on GitHub and in a clone)
FIGS = "../docs/study"
THREADS = max(1, (os.cpu_count() or 1) // args.jobs)
os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
TIMES = os.path.join(OUT, "times.json")   # older runs' wall-clock; new runs keep their own
times = json.load(open(TIMES)) if os.path.exists(TIMES) else {}


# Per task budget. Every config of a task gets the same one (same SFT checkpoint, same RL steps,
# prompts and samples), so the rewards compete on equal compute. arith: train_sft.py and
# train_rl.py defaults (2500 SFT steps; 100 RL steps x 16 prompts x 8 samples, replies up to 224
# tokens). countdown's searches are long-tailed (tiny-tokenizer demonstrations: median 224 tokens,
# p90 725, max ~2.7k): rows of its longest example would cost ~8 s per SFT step on this CPU, so
# SFT drops the 22% of demonstrations over 512 tokens and RL samples replies up to 512 tokens
# (~10x an arith rollout), with 8 prompts per step and 4 samples per problem at evaluation, to
# fit the study in a few hours of a 2-core CPU.
# adaptive_T: the adaptive schedule with --acc_threshold T (default 0.9: with 8 samples a prompt
# counts as solved only when all 8 are right); arith runs 0.5 too, where half the group suffices.
# countdown runs no adaptive: after its SFT the group accuracy is ~5%, a prompt all (or half) of
# its samples solve is rare, and the schedule is then plain rlsp.
PAPER = ("rlsp", "linear", "cosine")      # the paper's exploration rewards: PPO takes the best
# adaptive thinking that keeps accuracy: RLSP on hard prompts, an economy term on the easy
# ones (group accuracy >= 0.5): (--economy, --economy_coef), nanorlsp/economy.py
ECON = {"kimi": ("kimi", "0.2"), "alp": ("alp", "0.005"), "budget": ("budget", "0.2"),
        # stronger coefficients, run after the first ones moved level 1-2 lengths by ~10% in
        # 100 steps (RESULTS.md)
        "kimi0.5": ("kimi", "0.5"), "alp0.01": ("alp", "0.01")}
# exploration strength: rlsp@S is rlsp with coef = S * L_typical, so its term
# -coef / L is -S at a typical reasoning length, against the correctness term's 1. The paper's
# runs sit at S ~ 1 (lambda = 1000, ~1000 reasoning tokens); the default coef 0.5 is S ~ 0.01.
# S = 0 is the verifier-only run (none). L_typical: l_typical() below.
STRENGTHS = ("0.03", "0.1", "0.3", "1")
SWEEP = ",".join(f"rlsp@{x}" for x in STRENGTHS)
# the RL objective (Dr. GRPO: the sequence-mean normaliser itself pushes length; RLSP pays for it
# on purpose). R@AGG is reward R (none, or rlsp at the default coef) with --loss_agg AGG;
# train_rl.py's default, token_mean, is the plain none and rlsp runs. dapo and gspo are verifier
# only. Both take 2 updates per batch: with one, the sampling policy is the one being updated,
# every ratio is 1 and no clip ever acts; 2 is the cheapest setting in which the clip is live
# (DAPO takes 16 minibatch updates per batch, GSPO 4; TRL's GRPO repeats whole-batch passes,
# num_iterations, default 1), at one more forward and backward per step.
AGGS = ("seq_mean", "constant")
OBJ_FLAGS = {
    # DAPO (Yu et al. 2025): clip-higher (eps_low 0.2, eps_high 0.28), dynamic sampling (drop the
    # groups whose rewards are all equal), token-level loss; rl_flags adds the soft overlong
    # punishment over the last 20% of the length cap (their 4096 of 20480 tokens)
    "dapo": ["--policy_loss", "clip", "--clip", "0.2", "--clip_high", "0.28",
             "--dynamic_sampling", "--loss_agg", "token_mean", "--updates_per_batch", "2"],
    # GSPO (Zheng et al. 2025): the sequence-level ratio (length-normalised), clipped to
    # [1 - 3e-4, 1 + 4e-4], the paper's left and right ranges, averaged over replies (its
    # objective's 1/G sum: seq_mean); written out though train_rl.py defaults to them for gspo
    "gspo": ["--policy_loss", "gspo", "--clip", "0.0003", "--clip_high", "0.0004",
             "--loss_agg", "seq_mean", "--updates_per_batch", "2"],
}
# the runs beside the plain none and rlsp ones (--objectives runs all of them)
OBJECTIVES = ",".join([*(f"{r}@{a}" for a in AGGS for r in ("none", "rlsp")), *OBJ_FLAGS])
# pass@k for k = 1..64 (does RL widen what the model can solve, or only sharpen
# it? Yue et al. 2025): 64 samples at T = 1 on the first `limit` held-out problems, for the SFT
# model, the verifier-only runs and the best RLSP config's runs (best_rlsp)
PASSK = {"arith": dict(limit=200, n=64), "countdown": dict(limit=100, n=64)}
for p in PASSK.values():
    p.update({k: v for k, v in (("limit", args.passk_problems), ("n", args.passk_samples))
              if v is not None})
BEH = ("backtracking", "verification", "alternatives")
BUDGET = {
    "arith": dict(sft_steps=2500, sft_flags=[], steps=100, rl_flags=[], limit=500, k=8,
                  eval_flags=[],
                  rewards="none,rlsp,linear,cosine,adaptive,adaptive_0.5,kimi,alp,budget,kimi0.5,"
                          "alp0.01," + SWEEP + "," + OBJECTIVES),
    "countdown": dict(sft_steps=1500, sft_flags=["--seq_len", "512", "--drop_long"], steps=40,
                      rl_flags=["--max_new_tokens", "512", "--prompts_per_step", "8",
                                "--eval_problems", "100", "--eval_interval", "20"],
                      limit=200, k=4, eval_flags=["--max_new_tokens", "512"],
                      rewards="none,rlsp,linear,cosine,kimi,alp,budget," + SWEEP),
}
# emergence, tested: the same tasks and budgets, but SFT on demonstrations with
# no verification and no backtracking (arith: direct and plain-steps traces; countdown: direct
# answers and the winning line of moves only, data/countdown.py's 'path' style at the search
# styles' 80%), then RL without (none) and with the exploration reward, at the default coef and at
# the paper's strength (rlsp@1). Behaviours are then read functionally (behaviors.functional):
# the demonstrations' markers cannot appear in a model never shown them.
PLAIN = {"arith": "direct,steps", "countdown": "direct,path=0.8"}
for t, styles in PLAIN.items():
    BUDGET[f"{t}_plain"] = dict(BUDGET[t], task=t, sft_flags=BUDGET[t]["sft_flags"] + [
        "--styles", styles], rewards="none,rlsp,rlsp@1")
# a countdown model that can search: countdown on 1..9 with every result at
# most 99 (data/countdown_small.py: countdown's own 2-digit products were most of the tiny model's
# 44% wrong search steps), SFT long enough that the model's own steps are >= 95% right at T = 1,
# then 200 RL steps, verifier only against RLSP at a strength the exploration-strength sweep measured on countdown
BUDGET["countdown_small"] = dict(BUDGET["countdown"], sft_steps=5000, steps=200,
                                 rewards="none,rlsp@0.3",
                                 rl_flags=["--max_new_tokens", "512", "--prompts_per_step", "8",
                                           "--eval_problems", "0"])
for t in TASKS:
    if t not in BUDGET:
        raise SystemExit(f"study: no BUDGET for task '{t}' (known: {', '.join(BUDGET)})")
    if args.objectives:
        BUDGET[t]["rewards"] = "none,rlsp," + OBJECTIVES
    for key in ("steps", "sft_steps", "limit", "rewards"):
        if getattr(args, key) is not None:
            BUDGET[t][key] = getattr(args, key)


def task_of(key: str) -> str:
    """The data/ task a BUDGET key trains on (a variant such as arith_plain: its base task)."""
    return BUDGET[key].get("task", key)


def rewards_of(task: str) -> list[str]:
    return BUDGET[task]["rewards"].split(",")


def threshold(reward: str) -> str | None:
    """adaptive_T -> 'T', adaptive -> None (train_rl.py's default --acc_threshold, 0.9)."""
    return reward.partition("_")[2] or None


def strength(reward: str) -> float | None:
    """rlsp@S -> S; None for every other config ('none' is strength 0: strength_section)."""
    r, _, s = reward.partition("@")
    return float(s) if r == "rlsp" and s not in ("", *AGGS) else None


def objective(reward: str) -> tuple[str, list[str]] | None:
    """R@AGG -> (R, its --loss_agg flags); dapo, gspo -> ('none', their flags); None for every
    other config (none and rlsp are the token_mean runs: train_rl.py's default)."""
    if reward in OBJ_FLAGS:
        return "none", OBJ_FLAGS[reward]
    r, _, agg = reward.partition("@")
    return (r, ["--loss_agg", agg]) if agg in AGGS else None


def reasoning_ids(task: str, text: str, tok) -> list[int]:
    """A reply's reasoning tokens as train_rl.py scores them: the text before the answer the
    checker reads (all of it when there is none)."""
    from data import get_task
    start = get_task(task_of(task)).answer_start(text)
    return tok.encode(text[:start] if start is not None else text)


def l_typical(task: str) -> float | None:
    """L_typical: the SFT model's median reasoning length (tokens before the answer) over its
    T = 1 held-out samples that reason at all (L > 0). Not over all replies: after SFT most arith
    replies are direct answers (L = 0, the median is then 0), and the term's size at L = 0 is
    -coef for any S. Computed once, from the SFT run's eval_t1 transcripts, and kept in
    sft/l_typical.json with the share of samples that reason, so every run of a sweep (and every
    rerun of the report) uses one value. None before the SFT evals exist."""
    sft = os.path.join(OUT, task, "sft")
    path = os.path.join(sft, "l_typical.json")
    if (r := read(path)) is not None:
        return r["tokens"]
    tp = os.path.join(sft, "eval_t1.transcripts.jsonl")
    if not os.path.exists(tp):
        return None
    from nanorlsp.tokenizer import load_tokenizer
    tok = load_tokenizer(sft)
    lens = [len(reasoning_ids(task, json.loads(line)["response"], tok)) for line in open(tp)]
    reason = [n for n in lens if n > 0]
    tokens = float(statistics.median(reason)) if reason else 1.0
    json.dump({"tokens": tokens, "share_reasoning": len(reason) / max(1, len(lens)),
               "samples": len(lens), "from": "eval_t1.transcripts.jsonl"}, open(path, "w"))
    return tokens


def strength_coef(task: str, reward: str) -> float:
    lt = l_typical(task)
    if lt is None:
        tp = os.path.join(OUT, task, "sft", "eval_t1.transcripts.jsonl")
        raise SystemExit(f"study: {reward} needs L_typical, from the SFT run's T = 1 evals "
                         f"({tp}): none yet")
    return strength(reward) * lt


def rl_flags(task: str, reward: str) -> list[str]:
    f = BUDGET[task]["rl_flags"] + args.rl_flags.split()
    if (obj := objective(reward)) is not None:
        if reward != "dapo":
            return rl_flags(task, obj[0]) + obj[1]
        # the last 20% of the length cap: the last --max_new_tokens given, else train_rl.py's
        # default 224
        cap = ([224] + [int(v) for k, v in zip(f, f[1:]) if k == "--max_new_tokens"])[-1]
        return rl_flags(task, obj[0]) + obj[1] + ["--overlong_buffer", str(cap // 5)]
    if strength(reward) is not None:
        return f + ["--explore_reward", "rlsp", "--explore_coef",
                    f"{strength_coef(task, reward):.6g}"]
    if reward.startswith("adaptive"):
        thr = threshold(reward)
        # flip: the easy prompts pay the sign-flipped exploration term (--economy defaults to
        # none, which leaves them unpaid)
        return f + ["--explore_reward", "rlsp", "--explore_schedule", "adaptive",
                    "--economy", "flip", *(["--acc_threshold", thr] if thr else [])]
    if reward in ECON:
        return f + ["--explore_reward", "rlsp", "--explore_schedule", "adaptive",
                    "--acc_threshold", "0.5", "--economy", ECON[reward][0],
                    "--economy_coef", ECON[reward][1]]
    return f + ["--explore_reward", reward]


def short(key: str) -> str:
    if key in OBJ_FLAGS:
        return key.upper()
    if (obj := objective(key)) is not None:
        return f"{obj[0]}, {key.partition('@')[2]}"
    if strength(key) is not None:
        return f"rlsp, strength {strength(key):g}"
    if key in ECON:
        return f"rlsp + {ECON[key][0]} ({ECON[key][1]})"
    return f"adaptive ({threshold(key) or '0.9'})" if key.startswith("adaptive") else key


def label_of(reward: str) -> str:
    if reward == "none":
        return "RL verifier only (none)"
    if reward in OBJ_FLAGS:
        return f"RL {reward.upper()}, verifier only"
    if (obj := objective(reward)) is not None:
        return f"{label_of(obj[0])}, {reward.partition('@')[2]} aggregation"
    if reward.startswith("adaptive"):
        return f"RL adaptive (threshold {threshold(reward) or '0.9'})"
    if strength(reward) is not None:
        return f"RL rlsp, strength {strength(reward):g} (coef / L_typical)"
    if reward in ECON:
        return f"RL rlsp + {ECON[reward][0]} ({ECON[reward][1]}) economy on easy prompts"
    return f"RL {reward}"


# -----------------------------------------------------------------------------
# jobs: a named list of commands, each skipped when its output exists


def step_done(run_dir: str, steps: int) -> bool:
    return has_checkpoint(run_dir) and read_checkpoint(run_dir)["step"] >= steps


def train_cmd(script: str, run_dir: str, flags: list[str], steps: int) -> list[str] | None:
    if step_done(run_dir, steps):
        return None
    resume = ["--resume"] if has_checkpoint(run_dir) else []
    return [sys.executable, script, "--out_dir", run_dir, "--max_steps", str(steps), *resume,
            *flags]


def eval_cmds(task: str, run_dir: str) -> list[list[str]]:
    b, out = BUDGET[task], []
    for name, flags in (("greedy", ["--temperature", "0"]),
                        ("t1", ["--temperature", "1", "--n_samples", str(b["k"]), "--seed", "0"])):
        path = os.path.join(run_dir, f"eval_{name}.json")
        if not os.path.exists(path):
            out.append([sys.executable, "eval.py", "--init_from", run_dir, "--task", task_of(task),
                        "--limit", str(b["limit"]), "--out", path, *flags, *b["eval_flags"]])
    return out


def run_job(name: str, cmds: list[list[str]], threads: int = THREADS) -> None:
    cmds = [c for c in cmds if c]
    if not cmds:
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    with open(os.path.join(OUT, "logs", name.replace("/", "_") + ".log"), "a") as log:
        for c in cmds:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(c[1:])}", flush=True)
            log.write(f"$ {' '.join(c)}\n")
            log.flush()
            t1 = time.time()
            r = subprocess.run(c, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if r.returncode:
                raise SystemExit(f"study: {name} failed (exit {r.returncode}); see "
                                 f"{log.name}; finished runs are kept, rerun to resume")
            if c[1] in ("train_sft.py", "train_rl.py"):
                # training wall-clock, kept in the run's own directory (two study processes,
                # one per task, may run side by side)
                tf = os.path.join(OUT, name, "train_seconds.json")
                spent = (read(tf) or {"seconds": times.get(name, 0.0)})["seconds"]
                json.dump({"seconds": spent + time.time() - t1}, open(tf, "w"))
    # every command's wall-clock, evaluations included, summed over invocations (the report's
    # total: a resumed study is many invocations)
    sf = os.path.join(OUT, "logs", name.replace("/", "_") + ".seconds")
    json.dump({"task": name.split("/")[0],
               "seconds": (read(sf) or {"seconds": 0.0})["seconds"] + time.time() - t0},
              open(sf, "w"))
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {time.time() - t0:.0f} s", flush=True)


def run_all(jobs: dict) -> None:
    # a phase with fewer jobs to do than --jobs (one task's SFT) gives each of them more threads
    todo = sum(any(v) for v in jobs.values())
    threads = max(1, (os.cpu_count() or 1) // max(1, min(args.jobs, todo)))
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(run_job, k, v, threads) for k, v in jobs.items()]:
            f.result()


def read(path: str):
    return json.load(open(path)) if os.path.exists(path) else None


def runs_of(task: str, reward: str, algo: str = "reinforce") -> list[str]:
    tag = reward if algo == "reinforce" else f"{algo}_{reward}"
    return [os.path.join(OUT, task, f"{tag}_s{s}") for s in SEEDS]


def train_seconds(task: str, run_dir: str) -> float | None:
    r = read(os.path.join(run_dir, "train_seconds.json"))
    return r["seconds"] if r else times.get(f"{task}/{os.path.basename(run_dir)}")


def rollout_steps(run_dir: str) -> list[dict]:
    """A run's per-step rollout records from metrics.jsonl ([] if it has none yet)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [r for line in open(path) if "acc" in (r := json.loads(line))]


def t1_rows(run_dir: str) -> list[dict]:
    """The transcript rows of a run's T = 1 evaluation ([] before it ran)."""
    tp = os.path.join(run_dir, "eval_t1.transcripts.jsonl")
    return [json.loads(x) for x in open(tp)] if os.path.exists(tp) else []


def t1_responses(run_dir: str) -> list[str] | None:
    """The replies of a run's T = 1 evaluation, or None before it ran."""
    return [r["response"] for r in rows] if (rows := t1_rows(run_dir)) else None


def first_last(steps: list[dict], n: int = 10):
    """Mean of each rollout statistic over a run's first and last n RL steps, or None."""
    if len(steps) < 2 * n:
        return None

    def mean(rows):
        out = {k: statistics.mean(r[k] for r in rows) for k in ("acc", "len_mean", "truncated")}
        out["behaviors"] = {b: statistics.mean(r["behaviors"][b] for r in rows) for b in BEH}
        return out
    return mean(steps[:n]), mean(steps[-n:])


def best_of(task: str, keys: list[str], every_seed: bool) -> str | None:
    """The config of keys whose REINFORCE runs have the best mean greedy pass@1, over its
    finished seeds (every_seed: only configs whose seeds have all finished)."""
    scores = {}
    for r in keys:
        accs = [e["pass@1"] for d in runs_of(task, r)
                if (e := read(os.path.join(d, "eval_greedy.json")))]
        if accs and (len(accs) == len(SEEDS) or not every_seed):
            scores[r] = statistics.mean(accs)
    return max(scores, key=scores.get) if scores else None


def best_reward(task: str) -> str | None:
    """The paper's exploration reward (PPO's), once every seed of it has finished."""
    return best_of(task, [r for r in rewards_of(task) if r in PAPER], every_seed=True)


def best_rlsp(task: str) -> str | None:
    """The rlsp config (the default coef or a strength rlsp@S) for the pass@k curves."""
    return best_of(task, [r for r in rewards_of(task) if r == "rlsp" or strength(r) is not None],
                   every_seed=False)


def passk_models(task: str) -> list[tuple[str, list[str]]]:
    """(label, run dirs) of the pass@k models: SFT, verifier only, the best RLSP config."""
    out = [("SFT", [os.path.join(OUT, task, "sft")])]
    if "none" in rewards_of(task):
        out.append(("verifier only (none)", runs_of(task, "none")))
    if (best := best_rlsp(task)) is not None:
        out.append((f"best RLSP: {short(best)}", runs_of(task, best)))
    return out


def passk_cmd(task: str, run_dir: str) -> list[str] | None:
    path = os.path.join(run_dir, "eval_passk.json")
    if os.path.exists(path) or not has_checkpoint(run_dir):
        return None
    p = PASSK[task]
    return [sys.executable, "eval.py", "--init_from", run_dir, "--task", task_of(task), "--limit",
            str(p["limit"]), "--out", path, "--temperature", "1", "--n_samples", str(p["n"]),
            "--seed", "0", "--k", ",".join(str(k) for k in range(1, p["n"] + 1)),
            *BUDGET[task]["eval_flags"]]


t_start = time.time()
if not args.report:
    # 1. SFT per task, then its evals
    run_all({f"{t}/sft": [train_cmd("train_sft.py", os.path.join(OUT, t, "sft"),
                                    ["--task", task_of(t), "--eval_problems", "0",
                                     *BUDGET[t]["sft_flags"]], BUDGET[t]["sft_steps"])]
             + eval_cmds(t, os.path.join(OUT, t, "sft")) for t in TASKS})
    # 2. REINFORCE runs, every reward x seed
    # seed-major (every reward's seed 1, then every seed 2, ...): a study cut short still has
    # every config, with fewer seeds
    jobs = {}
    for t in TASKS:
        sft = os.path.join(OUT, t, "sft")
        for k, s in enumerate(SEEDS):
            for r in rewards_of(t):
                d = runs_of(t, r)[k]
                jobs[f"{t}/{r}_s{s}"] = [train_cmd("train_rl.py", d, [
                    "--init_from", sft, "--task", task_of(t), "--seed", str(s),
                    *rl_flags(t, r)],
                    BUDGET[t]["steps"])] + eval_cmds(t, d)
    run_all(jobs)
    # 3. PPO with each task's best exploration reward
    jobs = {}
    for t in ([] if args.no_ppo or args.objectives else TASKS):
        r = best_reward(t)
        if r is None:   # no exploration reward in --rewards
            continue
        for s, d in zip(SEEDS, runs_of(t, r, "ppo")):
            jobs[f"{t}/ppo_{r}_s{s}"] = [train_cmd("train_rl.py", d, [
                "--init_from", os.path.join(OUT, t, "sft"), "--task", task_of(t), "--seed", str(s),
                "--algo", "ppo", *rl_flags(t, r)], BUDGET[t]["steps"])] + eval_cmds(t, d)
    run_all(jobs)
    # 4. pass@k curves of SFT, verifier only and the best RLSP config
    run_all({f"{t}/{os.path.basename(d)}/passk": [passk_cmd(t, d)]
             for t in TASKS if t in PASSK and not args.objectives
             for _, dirs in passk_models(t) for d in dirs})
    print(f"study: runs finished in {time.time() - t_start:.0f} s", flush=True)

# -----------------------------------------------------------------------------
# the report

from matplotlib.figure import Figure  # noqa: E402  (matplotlib only when reporting)
from nanorlsp.tooling.plot import levels_figure  # noqa: E402


def ms(xs: list[float], pct: bool = True) -> str:
    """mean +- sample std over seeds ('-' if none)."""
    if not xs:
        return "-"
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.1f}")
    return f(statistics.mean(xs)) + (f" ± {f(statistics.stdev(xs))}" if len(xs) > 1 else "")


_held_out: dict[str, dict[str, dict]] = {}


def held_out(task: str) -> dict[str, dict]:
    """{prompt: problem} of the task's held-out set, drawn as eval.py draws it (seed 0)."""
    from data import get_task
    if task not in _held_out:
        _held_out[task] = {p["prompt"]: p for p in get_task(task_of(task)).make_problems(
            "test", BUDGET[task]["limit"], seed=0)}
    return _held_out[task]


def level_tokens(task: str, path: str) -> dict[int, list[int]]:
    """Reply tokens per difficulty level from an eval's transcripts (each problem's level looked
    up in the task's held-out set)."""
    out: dict[int, list[int]] = {}
    tp = path.replace(".json", ".transcripts.jsonl")
    if os.path.exists(tp):
        for line in open(tp):
            r = json.loads(line)
            lv = held_out(task).get(r["problem"], {}).get("level")
            if lv is not None:
                out.setdefault(lv, []).append(r["n_tokens"])
    return out


def by_level_tokens(task: str, path: str) -> dict[int, float]:
    """Mean reply tokens per difficulty level of an eval."""
    return {k: statistics.mean(v) for k, v in sorted(level_tokens(task, path).items())}


def tokens_on(task: str, path: str, levels: set[int]) -> float | None:
    """Mean reply tokens of an eval over the problems of the given levels (None: none there)."""
    n = [x for lv, xs in level_tokens(task, path).items() if lv in levels for x in xs]
    return statistics.mean(n) if n else None


def problem_scores(dirs: list[str], name: str = "eval_greedy", k: int = 1) -> list[dict]:
    """One {problem: score} per finished run of an eval's transcripts: each problem's unbiased
    pass@k from its n samples with c right (what eval.py averages; greedy: k = 1, 0 or 1)."""
    from nanorlsp.evaluation import pass_at_k
    rows = []
    for d in dirs:
        tp = os.path.join(d, f"{name}.transcripts.jsonl")
        if os.path.exists(tp):
            c: dict[str, list[bool]] = {}
            for line in open(tp):
                r = json.loads(line)
                c.setdefault(r["problem"], []).append(r["correct"])
            rows.append({p: pass_at_k(len(v), sum(v), k) for p, v in c.items()})
    return rows


def columns(*configs: list[dict]) -> list[list[list[float]]]:
    """Each config's (S, N) score matrix over the problems every run of every config scored, in
    one order, so the columns line up (nanorlsp/tooling/stats.py's paired_ci)."""
    probs = sorted(set.intersection(*(set(r) for rows in configs for r in rows)))
    return [[[r[p] for p in probs] for r in rows] for rows in configs]


def paired_cell(a: list[dict], b: list[dict], diff: bool = True) -> str:
    """'d [lo, hi]' in points: a's mean score minus b's on their common problems with its paired
    95% interval (bootstrap over seeds and problems), '*' when it excludes 0; only the interval
    with diff=False; '-' without runs or common problems."""
    from nanorlsp.tooling.stats import paired_ci, significant
    if not (a and b) or not (xa := columns(a, b))[0][0]:
        return "-"
    d, lo, hi = paired_ci(*xa)
    star = "*" if significant(lo, hi) else ""
    return (f"{100 * d:+.1f} " if diff else "") + f"[{100 * lo:+.1f}, {100 * hi:+.1f}]{star}"


def vs_rlsp_ci(task: str, key: str) -> str:
    """The paired 95% interval of key's greedy pass@1 minus RLSP's (paired_cell)."""
    return paired_cell(problem_scores(runs_of(task, key)), problem_scores(runs_of(task, "rlsp")),
                       diff=False)


def goal_table(task: str, keys: list[str]) -> list[str]:
    """Adaptive thinking's goal against plain RLSP, means over seeds of the greedy
    evals. arith: pass@1 within 0.5 points of RLSP, levels 1-2 at <= 40% of RLSP's tokens and
    the whole test set at <= 70%. countdown: fewer tokens on 3- than on 4-number problems, at no
    loss of pass@1 against RLSP. Beside each difference: its paired 95% interval."""
    def mean(key, f):
        xs = [x for d in runs_of(task, key) if (e := read(p := os.path.join(d, "eval_greedy.json")))
              and (x := f(e, p)) is not None]
        return statistics.mean(xs) if xs else None
    acc = lambda e, p: e["pass@1"]                                        # noqa: E731
    tok = lambda e, p: e["mean_response_tokens"]                          # noqa: E731
    easy = lambda e, p: tokens_on(task, p, {1, 2} if task_of(task) == "arith" else {3})  # noqa: E731
    hard = lambda e, p: tokens_on(task, p, {3, 4, 5} if task_of(task) == "arith" else {4})  # noqa: E731
    r_acc, r_tok, r_easy = mean("rlsp", acc), mean("rlsp", tok), mean("rlsp", easy)
    if r_acc is None:
        return []
    if task_of(task) == "arith":
        out = ["Against the goal (greedy, mean over seeds): pass@1 within 0.5 points of RLSP, "
               "level 1-2 replies at most 40% of RLSP's tokens, the whole test set at most 70%. "
               "95% CI: the paired bootstrap interval of the difference over seeds and problems "
               "(nanorlsp/tooling/stats.py; * excludes 0).",
               "", "| config | pass@1 (%) | vs RLSP (points) | 95% CI | level 1-2 tokens (% of "
               "RLSP) | all tokens (% of RLSP) | goal |", "|---|---|---|---|---|---|---|",
               f"| rlsp | {100 * r_acc:.1f} | - | - | "
               + (f"{r_easy:.1f} tokens" if r_easy else "-") + f" | {r_tok:.1f} tokens | - |"]
        for k in keys:
            a, tk, ez = mean(k, acc), mean(k, tok), mean(k, easy)
            if a is None:
                continue
            # a small held-out set may hold no level 1-2 problem: that column is then '-'
            d, ft = 100 * (a - r_acc), tk / r_tok
            fe = ez / r_easy if ez is not None and r_easy else None
            met = d >= -0.5 and fe is not None and fe <= 0.4 and ft <= 0.7
            out.append(f"| {short(k)} | {100 * a:.1f} | {d:+.1f} | {vs_rlsp_ci(task, k)} | "
                       + (f"{100 * fe:.0f}%" if fe is not None else "-")
                       + f" | {100 * ft:.0f}% | {'met' if met else 'not met'} |")
    else:
        out = ["Against the goal (greedy, mean over seeds): fewer tokens on 3-number than on "
               "4-number problems, at no loss of pass@1 against RLSP. 95% CI: as on arith.", "",
               "| config | pass@1 (%) | vs RLSP (points) | 95% CI | 3-number tokens | 4-number "
               "tokens | goal |", "|---|---|---|---|---|---|---|"]
        for k in ["rlsp"] + keys:
            a, ez, hd = mean(k, acc), mean(k, easy), mean(k, hard)
            if a is None or ez is None or hd is None:
                continue
            d = 100 * (a - r_acc)
            met = "-" if k == "rlsp" else "met" if ez < hd and d >= 0 else "not met"
            vs, ci = ("-", "-") if k == "rlsp" else (f"{d:+.1f}", vs_rlsp_ci(task, k))
            out.append(f"| {short(k)} | {100 * a:.1f} | {vs} | {ci} | {ez:.0f} | {hd:.0f} | "
                       f"{met} |")
    return out + [""]


def greedy_lengths(task: str, run_dir: str, tok, pieces) -> dict | None:
    """Reasoning tokens of a run's greedy replies, raw and effective (raw minus the tokens that
    only repeat earlier text, the reward's L), and the share with no answer the checker reads
    (the task's answer_start, the reward's no-answer test: not eval.py's `answer`, which falls
    back to a reply's last number)."""
    from data import get_task
    from nanorlsp.rewards import repeated_tokens
    answer_start = get_task(task_of(task)).answer_start
    tp = os.path.join(run_dir, "eval_greedy.transcripts.jsonl")
    if not os.path.exists(tp):
        return None
    raw, eff, none = [], [], []
    for line in open(tp):
        r = json.loads(line)
        ids = reasoning_ids(task, r["response"], tok)
        raw.append(len(ids))
        eff.append(len(ids) - repeated_tokens(ids, 8, pieces))
        none.append(answer_start(r["response"]) is None)
    return {"raw": statistics.mean(raw), "effective": statistics.mean(eff),
            "no_answer": statistics.mean(none)}


def strength_section(task: str, fig_dir: str) -> list[str]:
    """The exploration-strength table and figure: greedy pass@1 (95% interval over seeds and problems,
    and paired against verifier only), reply and reasoning tokens, the replies that stop
    answering, the rollouts' last 10 steps and the behaviours at T = 1, per strength S."""
    from nanorlsp.rewards import token_pieces
    from nanorlsp.tooling.stats import bootstrap_ci
    from nanorlsp.tooling.plot import strength_figure
    sweep = [r for r in rewards_of(task) if strength(r) is not None]
    lt = l_typical(task)
    if not sweep or lt is None:
        return []
    from nanorlsp.tokenizer import load_tokenizer
    tok = load_tokenizer(os.path.join(OUT, task, "sft"))
    pieces = token_pieces(tok)
    lt_info = read(os.path.join(OUT, task, "sft", "l_typical.json"))
    out = [f"### {task}: exploration strength", "",
           f"rlsp at coef = S x L_typical, L_typical = {lt:.0f} tokens: the SFT model's median "
           f"reasoning length over its T = 1 held-out samples that reason at all "
           f"({100 * lt_info['share_reasoning']:.0f}% of them; the others answer directly). At a "
           "typical reply the exploration term is -S against correctness's 1 (the paper's "
           "lambda = 1000 at ~1000 tokens: S ~ 1). S = 0 is verifier only. Greedy evals; "
           "95% CI: bootstrap over seeds and problems (nanorlsp/tooling/stats.py), vs S = 0 paired "
           "(* excludes 0). Effective: reasoning tokens that are not repeats (the reward's L). "
           "Last 10 steps: the rollouts at T = 1.", "",
           "| S | coef | runs | greedy pass@1 (%) [95% CI] | vs S = 0 (points) [95% CI] | "
           "reasoning tokens raw / effective | truncated / no answer (%) | last 10 steps: "
           "truncated / no answer (%) | backtracking / verification / alternatives, T=1 (%) |",
           "|" + "---|" * 9]
    keys = [("none", 0.0)] + ([("rlsp", None)] if "rlsp" in rewards_of(task) else []) + \
        [(r, strength(r)) for r in sweep]
    base = problem_scores(runs_of(task, "none"))
    points = []
    for key, S in keys:
        dirs = [d for d in runs_of(task, key) if read(os.path.join(d, "eval_greedy.json"))]
        if not dirs:
            continue
        cfg = read(os.path.join(dirs[0], "config.json")) or {}
        coef = 0.0 if key == "none" else cfg.get("args", {}).get("explore_coef", float("nan"))
        S = coef / lt if S is None else S                    # the default rlsp run's strength
        scores = problem_scores(dirs)
        m, lo, hi = bootstrap_ci(columns(scores)[0])
        vs = "-" if key == "none" else paired_cell(scores, base)
        g = [read(os.path.join(d, "eval_greedy.json")) for d in dirs]
        ln = [x for d in dirs if (x := greedy_lengths(task, d, tok, pieces))]
        t1 = [e for d in dirs if (e := read(os.path.join(d, "eval_t1.json")))]
        late = [st[-10:] for d in dirs if len(st := rollout_steps(d)) >= 10]
        lmean = lambda k: statistics.mean(r.get(k, 0.0) for st in late for r in st)  # noqa: E731
        beh = {b: statistics.mean(e["behaviors"][b] for e in t1) for b in BEH} if t1 else {}
        point = {"S": S, "acc": m, "raw": statistics.mean(x["raw"] for x in ln),
                 "effective": statistics.mean(x["effective"] for x in ln),
                 "truncated": statistics.mean(e["truncation_rate"] for e in g),
                 "no_answer": statistics.mean(x["no_answer"] for x in ln), "behaviors": beh}
        points.append(point)
        out.append(f"| {S:.3g}{' (default coef)' if key == 'rlsp' else ''} | {coef:.3g} | "
                   f"{len(dirs)} | {100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {vs} | "
                   f"{point['raw']:.1f} / {point['effective']:.1f} | "
                   f"{100 * point['truncated']:.1f} / {100 * point['no_answer']:.1f} | "
                   + (f"{100 * lmean('truncated'):.1f} / {100 * lmean('no_answer'):.1f}"
                      if late else "-") + " | "
                   + (" / ".join(f"{100 * beh[b]:.1f}" for b in BEH) if beh else "-") + " |")
    name = f"{task}_strength.png"
    strength_figure(points, f"{task}: against the exploration strength (mean over seeds)").savefig(
        os.path.join(fig_dir, name), dpi=80)
    return out + ["", f"![{task} against the exploration strength]({FIGS}/{name})", ""]


def passk_diff(dirs: list[str], sft_dirs: list[str], k: int) -> str:
    """A model's pass@k minus SFT's (paired_cell), '-' unless both scored the same problems."""
    a, b = problem_scores(dirs, "eval_passk", k), problem_scores(sft_dirs, "eval_passk", k)
    if not (a and b) or set.intersection(*map(set, a)) != set.intersection(*map(set, b)):
        return "-"
    return paired_cell(a, b)


def passk_section(task: str, fig_dir: str) -> list[str]:
    """Item 4: pass@k for k = 1..64 of SFT, verifier only and the best RLSP config (mean over
    seeds), a table at powers of 2, the figure, and the smallest k (if any) from which SFT's
    curve is at or above each RL model's: where sharpening stops and the base model's wider
    coverage wins (Yue et al. 2025's question)."""
    from nanorlsp.tooling.plot import passk_figure
    if task not in PASSK:
        return []
    p = PASSK[task]
    curves, dirs_of = {}, dict(passk_models(task))
    for label, dirs in dirs_of.items():
        evals = [e for d in dirs if (e := read(os.path.join(d, "eval_passk.json")))]
        if evals:
            ks = list(range(1, p["n"] + 1))
            curves[label] = (ks, [statistics.mean(e[f"pass@{k}"] for e in evals) for k in ks],
                             len(evals))
    if not curves:
        return []
    shown = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= p["n"]]
    out = [f"### {task}: pass@k, k = 1..{p['n']} (does RL widen what it solves, or sharpen?)", "",
           f"{p['n']} samples at T = 1 on the first {p['limit']} held-out problems, the unbiased "
           "estimator (eval.py), mean over seeds.", "",
           "| model | runs | " + " | ".join(f"pass@{k} (%)" for k in shown) + " |",
           "|" + "---|" * (len(shown) + 2)]
    for label, (ks, ys, n) in curves.items():
        out.append(f"| {label} | {n} | " + " | ".join(f"{100 * ys[k - 1]:.1f}" for k in shown)
                   + " |")
    if "SFT" in curves and len(curves) > 1:
        out.append("")
        sft = curves["SFT"][1]
        for label, (ks, ys, _) in curves.items():
            if label == "SFT":
                continue
            cross = next((k for k in ks if sft[k - 1] >= ys[k - 1]), None)
            diffs = "; ".join(f"pass@{k} {passk_diff(dirs_of[label], dirs_of['SFT'], k)}"
                              for k in (1, ks[-1]))
            out.append((f"- {label} vs SFT: above SFT at every k up to {ks[-1]}" if cross is None
                        else f"- {label} vs SFT: SFT is at or above it from k = {cross}")
                       + f" (minus SFT, points, paired 95% interval: {diffs})")
    name = f"{task}_passk.png"
    passk_figure({k: v[:2] for k, v in curves.items()},
                 f"{task}: pass@k at T = 1 (mean over seeds)").savefig(
        os.path.join(fig_dir, name), dpi=80)
    return out + ["", f"![{task} pass@k]({FIGS}/{name})", ""]


def mean_curve(runs: list[list[dict]], get) -> tuple[list[int], list[float]]:
    """The steps and the mean over runs of get(record), over the steps every run has, smoothed
    by a moving average over 5 steps."""
    n = min(len(r) for r in runs)
    y = [statistics.mean(get(r[i]) for r in runs) for i in range(n)]
    w = max(1, min(5, n))
    return [r["step"] for r in runs[0][:n]], [statistics.mean(y[max(0, i - w + 1):i + 1])
                                              for i in range(n)]


OBJ_HEADING = "the RL objective (loss aggregation, DAPO, GSPO)"


def objective_name(key: str) -> str:
    """none -> 'verifier only, token_mean'; rlsp@seq_mean -> 'rlsp, seq_mean'; dapo -> 'DAPO'."""
    if key in OBJ_FLAGS:
        return f"{key.upper()}, verifier only"
    r, agg = (objective(key)[0], key.partition("@")[2]) if objective(key) else (key, "token_mean")
    return f"{'verifier only' if r == 'none' else r}, {agg}" + (" (default)" if key == "rlsp" else "")


def objectives_section(task: str, fig_dir: str) -> list[str]:
    """The RL objective's table and figure, per config (none and rlsp under each --loss_agg,
    DAPO, GSPO): greedy pass@1 with its 95% interval and paired against rlsp and verifier only
    under token_mean, greedy reply tokens, the rollouts' length, entropy and flat-group share
    over the first and last 20 steps; then the share of RLSP's length growth over SFT that
    seq_mean gives verifier only. [] before any objective run has finished."""
    from nanorlsp.tooling.stats import bootstrap_ci
    done = {k: dirs for k in ["none", "rlsp", *OBJECTIVES.split(",")]
            if (dirs := [d for d in runs_of(task, k) if read(os.path.join(d, "eval_greedy.json"))])}
    if not any(objective(k) for k in done):
        return []
    sft = read(os.path.join(OUT, task, "sft", "eval_greedy.json"))
    scores = {k: problem_scores(dirs) for k, dirs in done.items()}
    tokens = {k: statistics.mean(read(os.path.join(d, "eval_greedy.json"))["mean_response_tokens"]
                                 for d in dirs) for k, dirs in done.items()}
    # each run's rollout records that carry the figure (a skipped update logs no entropy)
    # (dynamic sampling: the flat share of each step's first draw, flat_first_draw; the batch it
    # trained on, after the refill, has next to none)
    first = lambda r: dict(r, flat_groups=r.get("flat_first_draw", r.get("flat_groups")))  # noqa: E731
    logged = {k: {f: [st for d in dirs if (st := [first(r) for r in rollout_steps(d) if f in r])]
                  for f in ("len_mean", "entropy", "flat_groups")} for k, dirs in done.items()}
    base = len(BUDGET[task]["rl_flags"] + args.rl_flags.split())

    def flags_of(key: str) -> str:
        """key's own train_rl.py flags (rl_flags past the shared ones), each value as its first
        run's config.json recorded it: what ran, whatever --rl_flags this report is given."""
        ran = read(os.path.join(done[key][0], "config.json"))["args"]
        f = rl_flags(task, key)[base:]
        return " ".join(str(ran.get(f[i - 1][2:], x)) if i and f[i - 1].startswith("--")
                        and not x.startswith("--") else x for i, x in enumerate(f))

    def ends(key: str, f: str, pct: bool = False) -> str:
        """'first -> last': the mean over key's runs of f over their first and last 20 steps."""
        runs = [st for st in logged[key][f] if len(st) >= 2]
        if not runs:
            return "-"
        n = min(20, min(len(st) for st in runs) // 2)
        a, b = (statistics.mean(statistics.mean(r[f] for r in part(st)) for st in runs)
                for part in (lambda st: st[:n], lambda st: st[-n:]))
        return " → ".join(f"{100 * x:.1f}" if pct else f"{x:.3g}" for x in (a, b))

    out = [f"### {task}: {OBJ_HEADING}", "",
           "Dr. GRPO (Liu et al. 2025) finds that the sequence-mean normaliser itself pushes "
           "length; RLSP pays for length on purpose. Each config: the study's RL budget from the "
           "same SFT checkpoint, train_rl.py's defaults plus the flags shown (token_mean is the "
           "default --loss_agg: the plain none and rlsp runs). Greedy evals; 95% CI: bootstrap "
           "over seeds and problems, the differences paired on the same problems "
           "(nanorlsp/tooling/stats.py; * excludes 0). Rollout tokens, entropy (the policy's mean "
           "per-token entropy over the rollouts, as train_rl.py logs it) and flat groups (the "
           "share of prompts whose replies all scored the same: no learning signal) over the "
           "first → last 20 RL steps, mean over seeds.", "",
           f"Reproduce: `python experiments/study.py --tasks {task} --seeds "
           f"{','.join(str(x) for x in SEEDS)} --objectives --jobs 2` (its SFT checkpoint and "
           "the plain none / rlsp runs are shared with the rest of the study; a finished run is "
           "never redone), then `--objectives --report` rewrites this section.", "",
           "| config | train_rl.py flags | runs | greedy pass@1 (%) [95% CI] | vs rlsp, token_mean "
           "(points) [95% CI] | vs verifier only, token_mean (points) [95% CI] | reply tokens "
           "(greedy) | rollout tokens | entropy | flat groups (%) |", "|" + "---|" * 10]
    if sft:
        m, lo, hi = bootstrap_ci(columns(problem_scores([os.path.join(OUT, task, "sft")]))[0])
        out.append(f"| SFT | - | 1 | {100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | - | - | "
                   f"{sft['mean_response_tokens']:.1f} | - | - | - |")
    bars = []
    for k, dirs in done.items():
        m, lo, hi = bootstrap_ci(columns(scores[k])[0])
        bars.append((k, m, lo, hi))
        flags = flags_of(k)
        vs = [("-" if k == ref or ref not in scores else paired_cell(scores[k], scores[ref]))
              for ref in ("rlsp", "none")]
        out.append(f"| {objective_name(k)} | `{flags}` | {len(dirs)} | {100 * m:.1f} "
                   f"[{100 * lo:.1f}, {100 * hi:.1f}] | {vs[0]} | {vs[1]} | {tokens[k]:.1f} | "
                   f"{ends(k, 'len_mean')} | {ends(k, 'entropy')} | "
                   f"{ends(k, 'flat_groups', pct=True)} |")
    out.append("")
    # what dynamic sampling's filter cost: the prompts it drew
    dyn = [r for d in done.get("dapo", []) for r in rollout_steps(d) if "prompts_drawn" in r]
    if dyn:
        cfg = read(os.path.join(done["dapo"][0], "config.json"))["args"]
        out += [f"DAPO's flat groups are those of each step's first draw (before dynamic "
                f"sampling's refill; older runs without that figure: of the batch it trained on). "
                f"To fill its {cfg['prompts_per_step']} groups a step drew "
                f"{statistics.mean(r['prompts_drawn'] for r in dyn):.1f} prompts on average "
                f"(at most {cfg['max_redraws']} redraws) and trained on "
                f"{statistics.mean(r['dyn_groups'] for r in dyn):.1f} informative groups.", ""]
    # how much of RLSP's length growth over SFT (greedy tokens) verifier only under seq_mean
    # shows: the aggregation's share, without the exploration reward
    if sft and "rlsp" in tokens and "none@seq_mean" in tokens:
        grow = tokens["rlsp"] - sft["mean_response_tokens"]
        gain = {k: tokens[k] - sft["mean_response_tokens"] for k in ("none@seq_mean", "none")
                if k in tokens}
        if grow > 0:
            share = lambda k: f"{gain[k]:+.1f} tokens, {100 * gain[k] / grow:.0f}%"  # noqa: E731
            out.append(f"**Length.** rlsp under token_mean (the default) replies with "
                       f"{tokens['rlsp']:.1f} greedy tokens against SFT's "
                       f"{sft['mean_response_tokens']:.1f}, a growth of {grow:.1f}; verifier only "
                       f"under seq_mean grows them by {share('none@seq_mean')} of it: the "
                       "aggregation without the exploration reward"
                       + (f" (verifier only under token_mean: {share('none')})." if "none" in gain
                          else "."))
        else:
            out.append(f"**Length.** rlsp under token_mean does not lengthen greedy replies over "
                       f"SFT ({tokens['rlsp']:.1f} against {sft['mean_response_tokens']:.1f} "
                       "tokens): there is no growth to share out.")
        out.append("")
    # the figure: pass@1 bars with their intervals, then the rollouts over training; a colour per
    # reward or algorithm, a line style per aggregation
    def color(k):
        return {"none": "C0", "rlsp": "C1", "dapo": "C2", "gspo": "C3"}[k.partition("@")[0]]
    style = {"": "-", "seq_mean": "--", "constant": ":"}
    fig = Figure(figsize=(17, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    ax = axes[0]
    ax.barh(range(len(bars)), [100 * m for _, m, _, _ in bars], color=[color(b[0]) for b in bars],
            xerr=[[100 * (m - lo) for _, m, lo, _ in bars], [100 * (hi - m) for _, m, _, hi in bars]])
    if sft:
        ax.axvline(100 * sft["pass@1"], color="gray", ls="--", label="SFT")
        ax.legend(fontsize=7)
    ax.set_yticks(range(len(bars)), [objective_name(b[0]) for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set(title="greedy pass@1 (%), 95% CI", xlim=(max(0, 100 * min(b[2] for b in bars) - 5), None))
    for ax, (f, title) in zip(axes[1:], (("len_mean", "rollout reply tokens"),
                                         ("entropy", "entropy (per token)"),
                                         ("flat_groups", "flat groups (share of prompts)"))):
        for k in done:
            if runs := logged[k][f]:
                ax.plot(*mean_curve(runs, lambda r: r[f]), label=objective_name(k), color=color(k),
                        ls=style[k.partition("@")[2]])
        ax.set(title=title, xlabel="RL step")
    axes[1].legend(fontsize=6)
    name = f"objectives_{task}.png"
    fig.suptitle(f"{task}: the RL objective (mean over seeds, moving average over 5 steps)")
    fig.savefig(os.path.join(fig_dir, name), dpi=80)
    return out + [f"![{task}: the RL objective]({FIGS}/{name})", ""]


def splice(path: str, heading: str, section: list[str], parent: str) -> None:
    """Write section (its first line a heading) into the file in place of the one whose heading
    line starts with `heading` (up to the next heading of its level or above), keeping that line
    as edited by hand; or at the file's end under `parent`. The rest of a hand-kept RESULTS.md
    stays as it is."""
    old = open(path).read().split("\n") if os.path.exists(path) else []
    start = next((i for i, x in enumerate(old) if x.startswith(heading)), None)
    if start is None:
        new = old + [parent, ""] + section
    else:
        end = next((i for i in range(start + 1, len(old))
                    if old[i].startswith(("# ", "## ", "### "))), len(old))
        new = old[:start + 1] + section[1:] + old[end:]
    open(path, "w").write("\n".join(new).rstrip("\n") + "\n")


results = os.path.abspath(args.results)
os.makedirs(os.path.dirname(results), exist_ok=True)
fig_dir = os.path.normpath(os.path.join(os.path.dirname(results), FIGS))
os.makedirs(fig_dir, exist_ok=True)
if args.objectives:
    # only this study's section: the rest of RESULTS.md is kept as it is
    for t in TASKS:
        if not (section := objectives_section(t, fig_dir)):
            print(f"study: {t}: no RL-objective run has finished; {args.results} left as it is")
            continue
        splice(results, f"### {t}: {OBJ_HEADING}", section,
               "## The RL objective: loss aggregation, DAPO, GSPO")
        print(f"study: {t}: wrote the RL objective's section of {args.results}")
    sys.exit(0)

# measured once, by hand, for the committed RESULTS.md (the runs are resumable, so a clock in
# here would only see the last invocation)
MEASURED = ("about 6 h of wall-clock on the 2-core CPU that made this file, two jobs at a time "
            "(an estimate from the recorded job time below: its runs were made in several sittings, "
            "and RESULTS.md's budget paragraph adds the configs not re-run)")
lines = [MARKER, "# RESULTS: the RLSP study at small scale", "",
         f"Reproduce everything: `python experiments/study.py`, {MEASURED} (this file is its "
         f"output; `python experiments/study.py --report` rewrites it from finished runs). Runs live "
         f"in `{OUT}`, seeds {args.seeds}. "
         "Figures: `docs/study/`. Budgets (`BUDGET` in study.py), the same for every config of a "
         "task:", ""]
for t in TASKS:
    b = BUDGET[t]
    sft_cmd = " ".join(["train_sft.py --task", task_of(t), "--max_steps", str(b["sft_steps"]),
                        *b["sft_flags"]])
    rl_cmd = " ".join(["train_rl.py --init_from <sft> --task", task_of(t), "--max_steps",
                       str(b["steps"]), *b["rl_flags"]])
    lines.append(f"- {t}: SFT `{sft_cmd}`; RL `{rl_cmd}` (train_rl.py defaults otherwise); "
                 f"evaluation on {b['limit']} held-out problems, greedy and {b['k']} samples at "
                 f"T = 1 (`eval.py` defaults{', ' + ' '.join(b['eval_flags']) if b['eval_flags'] else ''}).")

def job_seconds(task: str) -> float:
    """The recorded wall-clock of every job of a task (training and evaluations, all
    invocations): run_job's logs/*.seconds."""
    d = os.path.join(OUT, "logs")
    names = os.listdir(d) if os.path.isdir(d) else []
    return sum(r["seconds"] for f in names if f.endswith(".seconds")
               and (r := read(os.path.join(d, f)))["task"] == task)


spent = {t: job_seconds(t) for t in TASKS}
lines += ["", "Recorded job time (every training and evaluation command of the runs in "
          f"`{OUT}`, summed over invocations; with --jobs {args.jobs} that many run at once, so "
          f"the wall-clock is about 1/{args.jobs} of it): "
          + ", ".join(f"{t} {v / 3600:.1f} h" for t, v in spent.items())
          + f"; total {sum(spent.values()) / 3600:.1f} h."]
lines += ["", f"`train min` is the training command's wall-clock on {os.cpu_count()} CPU core(s) "
          f"with --jobs {args.jobs} runs (each {THREADS} thread(s)) sharing them (a phase with "
          "fewer runs to do, such as one task's SFT, gives each more), and sometimes a second "
          "study process: a cost, not a benchmark.", ""]
# the reading of the tables is written by hand, from the runs (a rerun regenerates the tables,
# not this text: check it against them)
findings = os.path.join(fig_dir, "findings.md")
if os.path.exists(findings):
    lines += [open(findings).read().strip(), ""]
for t in TASKS:
    sft = os.path.join(OUT, t, "sft")
    best = best_reward(t)
    configs = [("SFT only", "sft", [sft])] + [
        (label_of(r), r, runs_of(t, r)) for r in rewards_of(t)]
    if best and any(os.path.isdir(d) for d in runs_of(t, best, "ppo")):   # not with --no_ppo
        configs.append((f"PPO {best}", f"ppo_{best}", runs_of(t, best, "ppo")))
    k = BUDGET[t]["k"]
    lines += [f"## {t}", "",
              f"| config | runs | greedy pass@1 (%) | pass@{k} T=1 (%) | maj@{k} (%) | reply tokens "
              "(greedy) | truncated (%) | backtracking / verification / alternatives, T=1 (%) | "
              "train min |", "|" + "---|" * 9]
    for label, key, dirs in configs:
        g = [e for d in dirs if (e := read(os.path.join(d, "eval_greedy.json")))]
        s = [e for d in dirs if (e := read(os.path.join(d, "eval_t1.json")))]
        mins = [m / 60 for d in dirs if (m := train_seconds(t, d)) is not None]
        beh = " / ".join(ms([e["behaviors"][b] for e in s]) for b in BEH)
        lines.append(f"| {label} | {len(g)} | {ms([e['pass@1'] for e in g])} | "
                     f"{ms([e[f'pass@{k}'] for e in s if f'pass@{k}' in e])} | "
                     f"{ms([e[f'maj@{k}'] for e in s if f'maj@{k}' in e])} | "
                     f"{ms([e['mean_response_tokens'] for e in g], pct=False)} | "
                     f"{ms([e['truncation_rate'] for e in g])} | {beh} | "
                     f"{ms(mins, pct=False)} |")
    lines.append("")
    # adaptive vs rlsp: accuracy and tokens per level
    adaptive = [r for r in rewards_of(t) if r.startswith("adaptive") or r in ECON]
    if adaptive and "rlsp" in rewards_of(t):
        lines += [f"### {t}: adaptive thinking vs plain RLSP, by difficulty level (greedy)", "",
                  "| config | level | accuracy (%) | reply tokens |", "|---|---|---|---|"]
        per_config = {}
        keys = ["sft"] + [k for k in ("none", "rlsp") if k in rewards_of(t)] + adaptive
        for key in keys:
            dirs = [sft] if key == "sft" else runs_of(t, key)
            evals = [(e, by_level_tokens(t, p)) for d in dirs
                     if (e := read(p := os.path.join(d, "eval_greedy.json")))]
            if not evals:
                continue
            levels = sorted({int(k) for e, _ in evals for k in e.get("accuracy_by_level", {})})
            acc_m, tok_m = [], []
            for lv in levels:
                accs = [e["accuracy_by_level"][str(lv)] for e, _ in evals
                        if str(lv) in e["accuracy_by_level"]]
                toks = [tk[lv] for _, tk in evals if lv in tk]
                if key != "none":
                    lines.append(f"| {short(key)} | {lv} | {ms(accs)} | {ms(toks, pct=False)} |")
                acc_m.append(statistics.mean(accs) if accs else float("nan"))
                tok_m.append(statistics.mean(toks) if toks else float("nan"))
            per_config[short(key)] = (levels, acc_m, tok_m)
        level_name = "numbers" if task_of(t).startswith("countdown") else "level"
        levels_figure(per_config, f"{t}: greedy accuracy and reply tokens by {level_name} "
                      "(mean over seeds)", level_name).savefig(
            os.path.join(fig_dir, f"{t}_levels.png"), dpi=80)
        lines += ["", f"![{t} by level]({FIGS}/{t}_levels.png)", ""]
        lines += goal_table(t, [k for k in adaptive if k != "rlsp"])
    # exploration strength: every rlsp@S against the verifier-only run (S = 0)
    lines += strength_section(t, fig_dir)
    lines += objectives_section(t, fig_dir)
    lines += passk_section(t, fig_dir)
    # over training, from each run's rollouts (T = 1): first / last 10 steps, and the figure
    steps = {label: [st for d in dirs if (st := rollout_steps(d))] for label, _, dirs in configs[1:]}
    lines += [f"### {t}: over training (rollouts at T = 1, first / last 10 steps, mean over "
              "seeds)", "", "| config | accuracy (%) | reply tokens | truncated (%) | "
              "backtracking (%) | verification (%) | alternatives (%) |", "|---|---|---|---|---|---|---|"]
    for label, runs in steps.items():
        ends = [w for st in runs if (w := first_last(st))]
        if not ends:
            continue
        cell = lambda f, pct=True: " → ".join(
            (f"{100 * v:.1f}" if pct else f"{v:.0f}")
            for v in (statistics.mean(f(a) for a, _ in ends), statistics.mean(f(b) for _, b in ends)))
        lines.append(f"| {label} | {cell(lambda r: r['acc'])} | {cell(lambda r: r['len_mean'], False)} | "
                     f"{cell(lambda r: r['truncated'])} | "
                     + " | ".join(cell(lambda r, b=b: r["behaviors"][b]) for b in BEH) + " |")
    lines.append("")
    # figure: every config over training, mean over its seeds, smoothed
    curves = {label: runs for label, runs in steps.items() if runs}
    if curves:
        panels = [("acc", "rollout accuracy (T = 1)"), ("len_mean", "mean reply tokens")] + [
            (b, f"{b} (share of rollouts)") for b in BEH if t != "arith" or b != "alternatives"]
        fig = Figure(figsize=(4 * len(panels), 3.4), layout="constrained")
        for ax, (key, title) in zip(fig.subplots(1, len(panels)), panels):
            for label, runs in curves.items():
                ax.plot(*mean_curve(runs, lambda r: (r["behaviors"] if key in BEH else r)[key]),
                        label=label.replace("RL ", ""))
            ax.set(title=title, xlabel="RL step")
        fig.axes[0].legend(fontsize=7)
        fig.savefig(os.path.join(fig_dir, f"{t}_training.png"), dpi=80)
        lines += [f"![{t} over training]({FIGS}/{t}_training.png)", "",
                  "(Mean over seeds, moving average over 5 steps. Per-run figures with spreads: "
                  "`python -m nanorlsp.tooling.plot RUN_DIR ...`.)", ""]

# -- what emerged: behaviours in the SFT data vs in samples after RL, with transcripts
from data import get_task  # noqa: E402
from data.countdown import step_error_totals, step_errors  # noqa: E402
from nanorlsp.behaviors import frequencies  # noqa: E402

lines += ["## What emerged", ""]
for t in TASKS:
    if t != task_of(t):     # a variant: "Emergence, tested" below
        continue
    demos = [r["response"] for r in get_task(t).make_sft_examples(4000, seed=1337)]
    in_data = frequencies(demos, t)
    sft_t1 = read(os.path.join(OUT, t, "sft", "eval_t1.json"))
    rl_key = "rlsp" if "rlsp" in rewards_of(t) else best_rlsp(t)   # countdown_small: rlsp@S
    rl_name = "RLSP" if rl_key == "rlsp" else f"RLSP ({short(rl_key)})" if rl_key else ""
    rl_dirs = runs_of(t, rl_key) if rl_key else []
    rl_t1 = [e for d in rl_dirs if (e := read(os.path.join(d, "eval_t1.json")))]
    if not (sft_t1 and rl_t1):
        lines += [f"{t}: runs not finished yet.", ""]
        continue
    lines += [f"### {t}", "", f"| behaviour | SFT demonstrations | SFT samples (T=1) | {rl_name} "
              "samples (T=1, mean over seeds) | |", "|---|---|---|---|---|"]
    after = {b: statistics.mean(e["behaviors"][b] for e in rl_t1) for b in BEH}
    for b in BEH:
        verdict = ("new: absent from the SFT data" if in_data[b] == 0 and after[b] > 0 else
                   "absent throughout" if after[b] == 0 and in_data[b] == 0 else
                   "more frequent than in SFT samples" if after[b] > sft_t1["behaviors"][b] else
                   "less frequent than in SFT samples")
        lines.append(f"| {b} | {100 * in_data[b]:.1f}% | {100 * sft_t1['behaviors'][b]:.1f}% | "
                     f"{100 * after[b]:.1f}% | {verdict} |")
    rows = t1_rows(rl_dirs[0])
    if hasattr(get_task(t), "step_error_totals"):   # countdown, countdown_small
        # a behaviour is only as good as the search it is part of: how often is a search step's
        # own arithmetic ("21-4=17") wrong? (the verifier checks the boxed expression only)
        def wrong_share(texts: list[str]) -> float:
            n, bad = step_error_totals(texts)
            return bad / max(1, n)

        def wrong_share_over_seeds(reward: str) -> float:
            shares = [wrong_share(r) for d in runs_of(t, reward) if (r := t1_responses(d))]
            return statistics.mean(shares) if shares else float("nan")

        cells = [wrong_share(demos), wrong_share(t1_responses(os.path.join(OUT, t, "sft")) or []),
                 wrong_share_over_seeds(rl_key), wrong_share_over_seeds("none")]
        lines += ["", "Search steps (`a op b = c`) whose arithmetic is wrong: SFT demonstrations "
                  f"{100 * cells[0]:.1f}%, SFT samples {100 * cells[1]:.1f}%, {rl_name} samples "
                  f"{100 * cells[2]:.1f}%, verifier-only samples {100 * cells[3]:.1f}% (T = 1, "
                  "mean over seeds)."]
    lines += ["", f"Transcripts from `{rl_dirs[0]}` (T = 1 samples on held-out problems), one per "
              "behaviour that became more frequent, a correct one whose every step adds up where "
              "there is one:", ""]
    shown = set()
    for b in BEH:
        if after[b] <= sft_t1["behaviors"][b]:
            continue
        hits = [r for r in rows if frequencies([r["response"]], t)[b] > 0]
        fresh = [r for r in hits if r["problem"] not in shown] or hits
        ex = next((r for r in fresh if r["correct"] and step_errors(r["response"])[1] == 0),
                  next((r for r in fresh if r["correct"]), fresh[0] if fresh else None))
        if ex:
            shown.add(ex["problem"])
            lines += [f"{b} ({len(hits)} of {len(rows)} samples), correct: {ex['correct']}:", "",
                      "```", ex["problem"], "---", ex["response"].strip(), "```", ""]

# -- emergence, tested: models never shown verification or backtracking, read functionally
from data.common import parse_styles  # noqa: E402
from nanorlsp.behaviors import functional  # noqa: E402


def shares(counts: list[dict[str, int]]) -> dict[str, float]:
    """Share of replies in which behaviors.functional found each behaviour (count > 0)."""
    return {b: sum(c[b] > 0 for c in counts) / max(1, len(counts)) for b in BEH}


def functional_counts(task: str, rows: list[dict]) -> list[dict[str, int]]:
    """behaviors.functional of each transcript row (countdown: with its problem's numbers)."""
    return [functional(r["response"], task_of(task), held_out(task)[r["problem"]].get("numbers"))
            for r in rows]


def demo_shares(task: str, styles: str | None) -> dict[str, float]:
    """shares of 2000 SFT demonstrations (the task's full mix, or only `styles`)."""
    rows = get_task(task).make_sft_examples(2000, seed=1337, styles=styles and parse_styles(styles))
    return shares([functional(r["response"], task, r.get("numbers")) for r in rows])


variants = [t for t in TASKS if t != task_of(t)]
if variants:
    lines += ["## Emergence, tested: SFT without verification or backtracking", "",
              "SFT on demonstrations with no verification and no backtracking (`--styles`: arith "
              "direct and plain steps; countdown direct answers and the winning line of moves "
              "only), then RL without and with the exploration reward. The behaviours are read "
              "from what a reply does, not from markers (`nanorlsp.behaviors.functional`): "
              "verification = a result recomputed that the reply already wrote; backtracking = "
              "a step or digit revised (arith), or a move from a state it had left (countdown); "
              "alternatives = a second route from the start. Share of replies with the behaviour, "
              "T = 1 samples on the held-out problems, mean ± spread over seeds. The full-mix "
              "column reads the normal demonstrations the same way: the detector finds what "
              "they show.", ""]
for t in variants:
    base, sft = task_of(t), os.path.join(OUT, t, "sft")
    flags = BUDGET[t]["sft_flags"]
    styles = flags[flags.index("--styles") + 1]
    # every finished RL run's T = 1 rows and their functional counts, read once
    runs = {d: (r, rows, functional_counts(t, rows)) for r in rewards_of(t) for d in runs_of(t, r)
            if (rows := t1_rows(d))}
    cols = [("demonstrations, full mix", [demo_shares(base, None)]),
            (f"demonstrations, {styles}", [demo_shares(base, styles)]),
            ("SFT samples", [shares(functional_counts(t, rows))] if (rows := t1_rows(sft)) else [])]
    cols += [(f"{short(r)} samples", [shares(c) for rr, _, c in runs.values() if rr == r])
             for r in rewards_of(t)]
    cols = [(name, v) for name, v in cols if v]
    acc = {r: [e["pass@1"] for d in runs_of(t, r) if (e := read(os.path.join(d, "eval_greedy.json")))]
           for r in rewards_of(t)}
    sft_g = read(os.path.join(sft, "eval_greedy.json"))
    lines += [f"### {t}", "", f"Greedy pass@1: SFT {ms([sft_g['pass@1']]) if sft_g else '-'}; "
              + "; ".join(f"{short(r)} {ms(a)} ({len(a)} runs)" for r, a in acc.items() if a)
              + ".", "", "| behaviour | " + " | ".join(n for n, _ in cols) + " |",
              "|" + "---|" * (len(cols) + 1)]
    for b in BEH:
        lines.append(f"| {b} | " + " | ".join(ms([x[b] for x in v]) for _, v in cols) + " |")
    # a transcript for each behaviour the RL models show, from the config that shows it most
    lines += ["", "Transcripts (T = 1, held-out), one per behaviour found after RL, from the "
              "config and seed that show it most, a correct one where there is one:", ""]
    for b in BEH:
        best = max(((d, sh) for d, (_, _, c) in runs.items() if (sh := shares(c)[b]) > 0),
                   key=lambda x: x[1], default=None)
        if best is None:
            lines += [f"- {b}: in no RL sample.", ""]
            continue
        r, rows, counts = runs[best[0]]
        hits = [x for x, c in zip(rows, counts) if c[b] > 0]
        ex = next((x for x in hits if x["correct"]), hits[0])
        lines += [f"- {b}: `{best[0]}` ({short(r)}), {len(hits)} of {len(rows)} samples; "
                  f"correct: {ex['correct']}", "", "```", ex["problem"], "---",
                  ex["response"].strip(), "```", ""]

# -- the real model: SmolLM2-135M-Instruct on arith (README's commands; 200 held-out problems)
# -- SmolLM2-135M-Instruct, a real model (docs/real_weights.md: the commands; each eval
# JSON and its transcripts copied into --smol_dir as <key>_arith.json)
SMOL = (("base", "SmolLM2 base"), ("sft", "+ SFT (70 steps)"),
        ("none", "+ SFT + RL, verifier only"), ("rlsp", "+ SFT + RL, rlsp (default coef)"),
        ("alp", "+ SFT + RL, rlsp + alp (0.005) economy on easy prompts"))
smol = {k: read(os.path.join(args.smol_dir, f"{k}_arith.json")) for k, _ in SMOL}
lines += ["## A real model: SmolLM2-135M-Instruct on arith", ""]
if smol["sft"]:
    from nanorlsp.tooling.stats import bootstrap_ci
    scores = {k: problem_scores([args.smol_dir], f"{k}_arith") for k, _ in SMOL if smol[k]}
    lines += [f"Greedy, {smol['sft']['n_problems']} held-out problems, bf16 (commands: "
              "docs/real_weights.md): the base model, SFT on the arith traces, then 20 RL steps "
              "from it per reward. 95% CI: bootstrap over problems; vs SFT: paired on the same "
              "problems (* excludes 0).", "",
              "| checkpoint | pass@1 (%) [95% CI] | vs SFT (points) [95% CI] | accuracy by level "
              "(1-5) | mean reply tokens | direct answers (%) |", "|---|---|---|---|---|---|"]
    for k, label in SMOL:
        if not (e := smol[k]):
            lines.append(f"| {label} | not run | | | | |")
            continue
        lv = " / ".join(f"{v:.2f}" for _, v in sorted(e["accuracy_by_level"].items()))
        ci = "-"
        if scores.get(k):
            m, lo, hi = bootstrap_ci(columns(scores[k])[0])
            ci = f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
        vs = paired_cell(scores.get(k, []), scores["sft"]) if k != "sft" else "-"
        direct = e["styles"].get("direct", {}).get("frac", 0.0) if "styles" in e else None
        lines.append(f"| {label} | {ci} | {vs} | {lv} | {e['mean_response_tokens']:.0f} | "
                     f"{'-' if direct is None else f'{100 * direct:.0f}'} |")
    lines.append("")
else:
    lines += [f"Not found in {args.smol_dir} (docs/real_weights.md's SmolLM2 commands).", ""]

open(results, "w").write("\n".join(lines) + "\n")
print(f"study: wrote {args.results}; recorded job time {sum(spent.values()) / 3600:.2f} h "
      f"({', '.join(f'{t} {v / 3600:.2f} h' for t, v in spent.items())}), this invocation "
      f"{time.time() - t_start:.0f} s")
