"""
SFT + RL on SmolLM2-135M-Instruct (arith), stage by stage, resumable: a stop at any moment (kill
the process group) loses at most the work since each job's last checkpoint.

    python experiments/smollm2.py sft                 # 1. the 70-step SFT; a long one, kept at best
    python experiments/smollm2.py diag                # 2. short RL runs over a grid of flags
    python experiments/smollm2.py --report diag       #    their logged diagnostics, one row per run
    python experiments/smollm2.py final --recipe "--lr 1e-6 --n_samples 8"   # 3. rewards none,
                                                      #    rlsp, rlsp_paper, then every eval
    python experiments/smollm2.py --report final      # 4. the table -> docs/results/smollm2/
    python experiments/smollm2.py all --dry_run       # the commands each stage would start now
    python experiments/smollm2.py all --smoke         # the same pipeline on the tiny model, seconds

Each stage is a list of jobs (train_sft.py / train_rl.py / eval.py commands, --jobs at a time,
--threads each): a finished output is never redone, a checkpointed unfinished run goes on with
--resume. Logs with each command and its time: OUT_DIR/logs/. The long SFT runs in segments of
--sft_eval_every steps (one cosine horizon, --sft_max_steps) so its best checkpoint by held-out
greedy accuracy can be copied out (sft_best) before the next segment overwrites it; it stops
after --sft_patience evaluations without a new best.
Footguns: run it from the repo root. Kill it with its process group (`kill -- -PGID`, or start it
under setsid): a child left running holds its run's lock and the rerun is refused. The long
SFT picks sft_best, and the diag evals read, held-out problems after the final arith set's 500
(train_sft.py --eval_offset, eval.py --offset): a recipe is never chosen on the test set.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import product

# this script lives in experiments/: the repo root holds the package and the scripts it runs
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nanorlsp.checkpoint import has_checkpoint, lock_run_dir, read_checkpoint  # noqa: E402
from nanorlsp.common import ArgParser, UserError, atomic_write, cpu_has_fast_bf16, die  # noqa: E402

STAGES = ("sft", "diag", "final")
# the documented recipe (docs/real_weights.md): SFT on the arith traces, then RL at 8 prompts x 4
SFT_FLAGS = "--task arith --batch_size 8 --lr 1e-4 --warmup_steps 5 --n_train 4000 --n_val 100"
RL_FLAGS = ("--task arith --prompts_per_step 8 --n_samples 4 --max_new_tokens 192 --lr 2e-5 "
            "--grad_accum 4 --eval_problems 0")
# the smoke test's stand-ins: a tiny model pretrained from scratch as the "base", seconds per job
SMOKE_SFT = "--task arith --batch_size 4 --lr 1e-3 --warmup_steps 2 --n_train 200 --n_val 8"
SMOKE_RL = ("--task arith --prompts_per_step 2 --n_samples 2 --max_new_tokens 12 --lr 1e-3 "
            "--eval_problems 0")
# the final names of eval outputs, per reward (docs/results/smollm2/<name>.json)
FINAL_NAMES = {"none": "rl_verifier", "rlsp": "rl_rlsp", "rlsp_paper": "rl_rlsp_paper"}
# flags the driver sets itself: a --recipe or --rl_flags holding one is refused
OWNED = ("--max_steps", "--out_dir", "--init_from", "--resume", "--dtype", "--overwrite",
         "--eval_interval")
DIAG_KEYS = ("acc", "flat_groups", "no_answer", "kl", "entropy", "grad_norm", "logp_diff",
             "len_mean")


def parse_args(argv=None):
    ap = ArgParser(description="SmolLM2-135M-Instruct: SFT + RL on arith, resumable stages "
                   "(sft, diag, final) and their reports.",
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("stages", nargs="*", metavar="STAGE", default=[],
                    help="sft, diag, final or all. sft: the 70-step SFT (sft70) and a long SFT "
                         "whose best held-out step is kept (sft_best); diag: short RL runs over "
                         "the grid below; final: RL per --final_rewards with --recipe, then "
                         "greedy evals of base, the SFT checkpoint and each RL run on arith "
                         "(500), GSM8K (200), MATH-500; none: --report only")
    ap.add_argument("--report", choices=["diag", "final"], default=None,
                    help="diag: mean over each run's steps of the logged diagnostics; final: "
                         "the results table (printed, and --results_dir/README.md)")
    ap.add_argument("--out_dir", default="out/smollm2", help="every run, log and timing")
    ap.add_argument("--results_dir", default="docs/results/smollm2",
                    help="the final evals' JSON and transcripts, and README.md")
    ap.add_argument("--smoke", action="store_true",
                    help="the tiny model instead (a base pretrained from scratch by "
                         "train_sft.py), a handful of steps and problems; defaults below are "
                         "then the smoke's (see SMOKE in the code)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="every job's --dtype; auto: float32 on a CPU without fast bf16 "
                         "(nanorlsp.common.cpu_has_fast_bf16: AVX2 runs bf16 ~500x slower), "
                         "else bfloat16")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS per job (default: cores / --jobs)")
    ap.add_argument("--jobs", type=int, default=1, help="jobs at once")
    ap.add_argument("--seed", type=int, default=1, help="RL seed")
    ap.add_argument("--dry_run", action="store_true",
                    help="print the commands each stage would start now; run nothing")
    # 1. SFT
    ap.add_argument("--sft_steps", type=int, default=70, help="the recipe's SFT (sft70)")
    ap.add_argument("--sft_max_steps", type=int, default=600,
                    help="the long SFT's horizon (its cosine decay ends there)")
    ap.add_argument("--sft_eval_every", type=int, default=20,
                    help="the long SFT's held-out eval and checkpoint cadence, in steps")
    ap.add_argument("--sft_eval_problems", type=int, default=200,
                    help="held-out problems per long-SFT eval (greedy)")
    ap.add_argument("--sft_patience", type=int, default=3,
                    help="the long SFT stops after this many evals without a new best")
    ap.add_argument("--sft_flags", default=None, help="train_sft.py flags of both SFT runs")
    # 2. diagnostics: one factor at a time from the first value of each list (or --grid full)
    ap.add_argument("--lr", default="2e-5,1e-5,3e-6,1e-6", help="diag: learning rates")
    ap.add_argument("--n_samples", default="4,8", help="diag: samples per prompt")
    ap.add_argument("--temperature", default="1.0,0.7", help="diag: rollout temperatures")
    ap.add_argument("--kl_coef", default="0.05,0", help="diag: KL coefficients")
    ap.add_argument("--policy_loss", default="reinforce", help="diag: train_rl.py --policy_loss")
    ap.add_argument("--loss_agg", default="token_mean,seq_mean", help="diag: --loss_agg")
    ap.add_argument("--explore_reward", default="none", help="diag: rewards")
    ap.add_argument("--sft", default="sft70,best", help="diag: SFT checkpoints (sft70, best)")
    ap.add_argument("--grid", choices=["oat", "full"], default="oat",
                    help="oat: the first value of every list, then each other value alone; "
                         "full: every combination")
    ap.add_argument("--diag_steps", type=int, default=6, help="RL steps per diag run")
    ap.add_argument("--diag_eval", type=int, default=200,
                    help="held-out greedy problems after each diag run (0: none)")
    ap.add_argument("--rl_flags", default=None,
                    help="train_rl.py flags under every RL run; replaces the documented base "
                    f"flags ({RL_FLAGS}): to add a flag, use --recipe or repeat them, with "
                    "--rl_flags=...")
    # 3. final
    ap.add_argument("--recipe", default="", help="train_rl.py flags of the final runs, added "
                    "to --rl_flags (later flags win)")
    ap.add_argument("--final_steps", type=int, default=20, help="RL steps of each final run")
    ap.add_argument("--final_sft", choices=["sft70", "best"], default="best",
                    help="the SFT checkpoint the final runs start from (and the 'sft' eval)")
    ap.add_argument("--final_rewards", default="none,rlsp,rlsp_paper",
                    help=f"final runs' --explore_reward, named {FINAL_NAMES}")
    ap.add_argument("--rlsp_coef", type=float, default=None,
                    help="rlsp's --explore_coef (default: train_rl.py's)")
    ap.add_argument("--ckpt_every", type=int, default=2,
                    help="RL checkpoint cadence in steps (the most a stop loses)")
    ap.add_argument("--sets", default="arith,gsm8k,math500", help="final evals' sets")
    ap.add_argument("--limits", default="500,200,500", help="problems per set")
    ap.add_argument("--tokens", default="320,320,512", help="--max_new_tokens per set")
    args = ap.parse_args(argv)
    if args.smoke:      # the smoke's sizes, unless given
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for k, v in SMOKE.items():
            if f"--{k}" not in given:
                setattr(args, k, v)
    args.sft_flags = args.sft_flags if args.sft_flags is not None else (
        SMOKE_SFT if args.smoke else SFT_FLAGS)
    args.rl_flags = args.rl_flags if args.rl_flags is not None else (
        SMOKE_RL if args.smoke else RL_FLAGS)
    for flag in ("recipe", "rl_flags", "sft_flags"):
        bad = [f for f in getattr(args, flag).split() if f.split("=")[0] in OWNED]
        if bad:
            ap.error(f"--{flag} may not hold {bad[0]}: the driver sets it")
    if bad := [s for s in args.stages if s not in (*STAGES, "all")]:
        ap.error(f"unknown stage {bad[0]!r} (known: {', '.join(STAGES)}, all)")
    if "--explore_reward" in args.recipe.split():
        ap.error("--recipe may not hold --explore_reward: --final_rewards names the runs")
    for k, kind in (("lr", float), ("n_samples", int), ("temperature", float),
                    ("kl_coef", float)):
        try:
            [kind(v) for v in str(getattr(args, k)).split(",")]
        except ValueError:
            ap.error(f"--{k} must be comma-separated numbers, got {getattr(args, k)!r}")
    if not args.stages and not args.report:
        ap.error("name a stage (sft, diag, final, all) or --report")
    for k in ("jobs", "sft_steps", "sft_max_steps", "sft_eval_every", "sft_patience",
              "diag_steps", "final_steps", "ckpt_every"):
        if getattr(args, k) < 1:
            ap.error(f"--{k} must be >= 1")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    if len({len(args.sets.split(",")), len(args.limits.split(",")),
            len(args.tokens.split(","))}) != 1:
        ap.error("--sets, --limits and --tokens need one entry each")
    if unknown := set(args.final_rewards.split(",")) - set(FINAL_NAMES):
        ap.error(f"--final_rewards: unknown {sorted(unknown)} (known: {', '.join(FINAL_NAMES)})")
    if unknown := set(args.sft.split(",")) - {"sft70", "best"}:
        ap.error(f"--sft: unknown {sorted(unknown)} (known: sft70, best)")
    args.stages = list(STAGES) if "all" in args.stages else args.stages
    if args.dtype == "auto":
        args.dtype = "bfloat16" if cpu_has_fast_bf16() else "float32"
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    return args


# the smoke test's sizes (--smoke): a run is seconds, the whole pipeline well under a minute
SMOKE = dict(out_dir="out/smollm2_smoke", results_dir="out/smollm2_smoke/results", sft_steps=6,
             sft_max_steps=8, sft_eval_every=4, sft_eval_problems=4, sft_patience=2,
             lr="1e-3", n_samples="2", temperature="1.0", kl_coef="0.05",
             loss_agg="token_mean", sft="best", diag_steps=4, diag_eval=4, final_steps=4,
             sets="arith,gsm8k", limits="6,3", tokens="16,8",
             # two jobs of one thread each: the tiny model's jobs are mostly process start-up
             jobs=2)


# -----------------------------------------------------------------------------
# jobs: each a function run on a worker thread; commands run as children we can stop


class Runner:
    """Runs commands with logs and timings under out_dir; stops every child on SIGTERM/SIGINT."""

    def __init__(self, args):
        self.args, self.out = args, args.out_dir
        self.children: set[subprocess.Popen] = set()
        self.stopping = False
        if not args.dry_run:
            os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)

    def run(self, name: str, cmd: list[str]) -> None:
        if self.stopping:   # a worker between two commands when the stop came
            raise UserError("stopped")
        if self.args.dry_run:
            say(f"[dry run] {name}: {' '.join(cmd[1:])}")
            return
        env = {**os.environ, "OMP_NUM_THREADS": str(self.args.threads)}
        log_path = os.path.join(self.out, "logs", name.replace("/", "_") + ".log")
        say(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}")
        t0 = time.time()
        with open(log_path, "a") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            self.children.add(p)
            rc = p.wait()
            self.children.discard(p)
            log.write(f"# exit {rc} after {time.time() - t0:.1f} s\n")
        if rc:
            raise UserError(f"{name} failed (exit {rc}); see {log_path}; finished steps are "
                            "kept, rerun to resume")
        # wall-clock per job, summed over invocations (a resumed stage is many invocations)
        dt = time.time() - t0
        update_json(os.path.join(self.out, "times.json"), name, lambda v: (v or 0.0) + dt)
        say(f"[{time.strftime('%H:%M:%S')}] {name}: done in {dt:.0f} s")

    def stop(self, signum, frame):
        # a training script's saves are atomic: killing it loses the steps since its checkpoint
        self.stopping = True
        for p in list(self.children):
            p.kill()
        die(f"stopped (signal {signum}); rerun the same command to resume", code=130)

    def all(self, jobs: dict) -> None:
        """Run {name: fn} --jobs at a time; the first failure is reported once the rest end."""
        with ThreadPoolExecutor(self.args.jobs) as pool:
            for f in [pool.submit(fn) for fn in jobs.values()]:
                f.result()


def say(line: str) -> None:
    """One line in one write: jobs on other threads print too."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read(path: str):
    return json.load(open(path)) if os.path.exists(path) else None


JSON_LOCK = threading.Lock()


def update_json(path: str, key: str, fn) -> None:
    """The JSON object at path gets key = fn(its value there, or None). --jobs N runs jobs on N
    threads that finish together, and an unguarded read-modify-write lets one thread's write
    drop another's key (times.json, evals.json)."""
    with JSON_LOCK:
        d = read(path) or {}
        d[key] = fn(d.get(key))
        atomic_write(path, json.dumps(d, indent=1, sort_keys=True) + "\n")


def step_of(run_dir: str) -> int:
    """The step of a run's checkpoint (0 without one)."""
    return read_checkpoint(run_dir, verify=())["step"] if has_checkpoint(run_dir) else 0


def train(R: Runner, name: str, script: str, run_dir: str, steps: int, flags: list[str]) -> None:
    """Train run_dir to `steps`: nothing if there, --resume from its checkpoint, else start."""
    if step_of(run_dir) >= steps:
        return
    resume = ["--resume"] if has_checkpoint(run_dir) else []
    R.run(name, [sys.executable, script, "--out_dir", run_dir, "--max_steps", str(steps),
                 "--dtype", R.args.dtype, *resume, *flags])


def evaluate(R: Runner, name: str, init: str, out: str, task: str, limit: int | None,
             tokens: int, data: str | None = None, offset: int = 0) -> None:
    """Greedy eval.py of init into out (+ transcripts), unless both exist; dtype recorded.
    offset: skip the first N problems (diag: past the final arith set)."""
    tp = out[:-len(".json")] + ".transcripts.jsonl"
    if os.path.exists(out) and os.path.exists(tp):
        return
    t0 = time.time()
    R.run(name, [sys.executable, "eval.py", "--init_from", init, "--task", task,
                 *(["--limit", str(limit)] if limit else []), *(["--data", data] if data else []),
                 *(["--offset", str(offset)] if offset else []), "--temperature", "0",
                 "--max_new_tokens", str(tokens), "--dtype", R.args.dtype,
                 "--out", out, "--transcripts", tp])
    if R.args.dry_run:
        return
    # each eval's dtype and time beside its outputs (eval.py's JSON does not record the dtype)
    entry = {"init_from": init, "dtype": R.args.dtype, "max_new_tokens": tokens,
             "seconds": round(time.time() - t0)}
    update_json(os.path.join(os.path.dirname(out), "evals.json"), os.path.basename(out),
                lambda _: entry)


# -----------------------------------------------------------------------------
# 1. SFT: sft70 (the recipe) and the long run, kept at its best held-out step


def base_model(args) -> str:
    return os.path.join(args.out_dir, "base") if args.smoke else "smollm2"


def sft_dir(args, which: str) -> str:
    return os.path.join(args.out_dir, {"sft70": "sft70", "best": "sft_best"}[which])


def long_evals(run_dir: str) -> list[tuple[int, float]]:
    """(step, held-out greedy accuracy) of each long-SFT eval, from its metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    rows = [json.loads(x) for x in open(path)] if os.path.exists(path) else []
    return [(r["step"], r["val_acc"]) for r in rows if "val_acc" in r]


def best_and_stop(evals: list[tuple[int, float]], patience: int, max_steps: int):
    """(best step, its accuracy, stopped): the first eval of the highest accuracy; stopped when
    `patience` evals since it brought no new best, or the horizon is reached."""
    if not evals:
        return None, None, False
    i = max(range(len(evals)), key=lambda j: (evals[j][1], -j))
    return evals[i][0], evals[i][1], len(evals) - 1 - i >= patience or evals[-1][0] >= max_steps


def keep_best(args, run_dir: str, step: int, acc: float) -> None:
    """Copy run_dir's checkpoint (at `step`) to sft_best: built in a temporary dir, best.json
    written last, swapped in by renames; a kill anywhere leaves one complete copy (fix_best)."""
    dst = sft_dir(args, "best")
    tmp, old = dst + ".tmp", dst + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir, tmp, ignore=shutil.ignore_patterns(".lock", "metrics.jsonl", "*.tmp*"))
    atomic_write(os.path.join(tmp, "best.json"), json.dumps({"step": step, "val_acc": acc}) + "\n")
    if os.path.isdir(dst):
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def fix_best(args) -> None:
    """After a kill inside keep_best: a complete new copy wins, else the old one comes back."""
    dst = sft_dir(args, "best")
    tmp, old = dst + ".tmp", dst + ".old"
    if os.path.exists(os.path.join(tmp, "best.json")):
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
    shutil.rmtree(tmp, ignore_errors=True)
    if not os.path.isdir(dst) and os.path.isdir(old):
        os.replace(old, dst)
    shutil.rmtree(old, ignore_errors=True)


def long_sft(R: Runner) -> None:
    """Segments of --sft_eval_every steps under one cosine horizon (--decay_steps, saved with the
    run), each ending in a held-out eval and a checkpoint; a new best is copied out before the
    next segment overwrites it."""
    a = R.args
    run, flags = os.path.join(a.out_dir, "sft_long"), sft_common(a)
    fix_best(a)
    while True:
        step, acc, stopped = best_and_stop(long_evals(run), a.sft_patience, a.sft_max_steps)
        at = step_of(run)
        kept = read(os.path.join(sft_dir(a, "best"), "best.json")) or {}
        if step is not None and step == at and kept.get("step") != step:
            keep_best(a, run, step, acc)
        if stopped:
            print(f"sft_long: best held-out accuracy {acc:.3f} at step {step} (sft_best)",
                  flush=True)
            return
        if step is not None and step != at and not has_checkpoint(sft_dir(a, "best")):
            raise UserError(f"sft_long's best step {step} was overwritten before it was copied; "
                            "delete out_dir's sft_long and rerun")
        nxt = min(a.sft_max_steps, (at // a.sft_eval_every + 1) * a.sft_eval_every)
        train(R, "sft/sft_long", "train_sft.py", run, nxt, [
            *flags, "--decay_steps", str(a.sft_max_steps), "--eval_interval",
            str(a.sft_eval_every), "--eval_problems", str(a.sft_eval_problems),
            "--eval_offset", str(arith_limit(a)),
            "--max_new_tokens", "192" if not a.smoke else "16"])
        if a.dry_run:   # nothing changed: the loop would print the same segment forever
            return


def arith_limit(a) -> int:
    """The final arith eval's problems: the first N of the held-out stream, which the long SFT's
    own evals skip (train_sft.py --eval_offset N)."""
    return dict((s, n) for s, n, _ in eval_sets(a)).get("arith", 0)


def sft_common(a) -> list[str]:
    return ["--init_from", base_model(a), *a.sft_flags.split()]


def stage_sft(R: Runner) -> None:
    a = R.args
    if a.smoke:   # the tiny stand-in for SmolLM2: a model pretrained from scratch on arith
        train(R, "sft/base", "train_sft.py", base_model(a), 30, [
            *SMOKE_SFT.split(), "--eval_problems", "0", "--eval_interval", "30"])
    # sft70 checkpoints every 10 steps (the recipe evaluated only at its end: same numbers,
    # resume is exact); no held-out problems: its accuracy comes from the final evals
    R.all({"sft70": lambda: train(R, "sft/sft70", "train_sft.py", sft_dir(a, "sft70"),
                                  a.sft_steps, [*sft_common(a), "--eval_interval",
                                                str(min(10, a.sft_steps)), "--eval_problems", "0"]),
           "sft_long": lambda: long_sft(R)})


def sft_ready(a, which: str) -> str:
    """The SFT checkpoint an RL stage starts from; one clear line if the sft stage has not
    finished it."""
    d = sft_dir(a, which)
    done = (step_of(d) >= a.sft_steps if which == "sft70" else
            best_and_stop(long_evals(os.path.join(a.out_dir, "sft_long")), a.sft_patience,
                          a.sft_max_steps)[2] and has_checkpoint(d))
    if not done and a.dry_run:
        print(f"[dry run] {d} is not finished: the commands below wait for it", flush=True)
    elif not done:
        raise UserError(f"{d} is not finished: run the sft stage first")
    return d


# -----------------------------------------------------------------------------
# 2. diagnostics: short RL runs over a grid


GRID = ("lr", "n_samples", "temperature", "kl_coef", "policy_loss", "loss_agg",
        "explore_reward", "sft")


def grid(a) -> list[dict]:
    """The diag configs: one factor at a time from the first values (oat), or every
    combination (full)."""
    lists = {k: [v.strip() for v in str(getattr(a, k)).split(",")] for k in GRID}
    if a.grid == "full":
        return [dict(zip(GRID, c)) for c in product(*lists.values())]
    base = {k: v[0] for k, v in lists.items()}
    out = [base]
    for k, vs in lists.items():
        out += [{**base, k: v} for v in vs[1:]]
    return out


def diag_name(c: dict) -> str:
    """A config's run name: every value, so the same config is one run in any grid."""
    return (f"{c['sft']}_lr{c['lr']}_g{c['n_samples']}_t{c['temperature']}_kl{c['kl_coef']}_"
            f"{c['policy_loss']}_{c['loss_agg']}_{c['explore_reward']}")


def merged(tokens: list[str]) -> list[str]:
    """Flags with each flag's last value only (what argparse would keep), in first-seen order:
    a flag and the tokens after it that are not flags."""
    groups: dict[str, list[str]] = {"": []}     # "": values before any flag, kept first
    last = ""
    for t in tokens:
        if t.startswith("--"):
            groups.pop(t, None)     # a later value replaces the earlier one
            groups[t], last = [], t
        else:
            groups[last].append(t)
    return [x for f, v in groups.items() for x in ((f, *v) if f else v)]


def rl_flags(a, c: dict, extra: str = "") -> list[str]:
    """train_rl.py flags: the base flags, then the config's, then `extra` (later flags win)."""
    return merged([*a.rl_flags.split(), "--seed", str(a.seed), "--eval_interval",
                   str(a.ckpt_every),
                   *[x for k in GRID if k != "sft" and k in c for x in (f"--{k}", c[k])],
                   *extra.split()])


def stage_diag(R: Runner) -> None:
    a = R.args
    jobs = {}
    for which in sorted({c["sft"] for c in grid(a)}):
        d = sft_ready(a, which)
        if a.diag_eval:   # the starting point's accuracy on the same problems
            jobs[f"ref_{which}"] = (lambda d=d, w=which: evaluate(
                R, f"diag/ref_{w}", d, os.path.join(a.out_dir, "diag", f"ref_{w}.json"),
                "arith", a.diag_eval, int(rl_flag(a, "--max_new_tokens", "192")),
                offset=arith_limit(a)))
    for c in grid(a):
        name, d = diag_name(c), os.path.join(a.out_dir, "diag", diag_name(c))

        def job(c=c, name=name, d=d):
            train(R, f"diag/{name}", "train_rl.py", d, a.diag_steps,
                  ["--init_from", sft_dir(a, c["sft"]), *rl_flags(a, c)])
            if a.diag_eval:
                evaluate(R, f"diag/{name}", d, os.path.join(d, "eval_greedy.json"), "arith",
                         a.diag_eval, int(rl_flag(a, "--max_new_tokens", "192")),
                         offset=arith_limit(a))
        jobs[name] = job
    R.all(jobs)


def rl_flag(a, flag: str, default: str) -> str:
    """The last value of a flag in the RL base flags (later flags win, as argparse does)."""
    f = a.rl_flags.split()
    return ([default] + [v for k, v in zip(f, f[1:]) if k == flag])[-1]


def mean_of(rows: list[dict], k: str):
    xs = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
    return statistics.mean(xs) if xs else None


def report_diag(a) -> str:
    """One row per diag run (in grid order): the mean over its steps of each logged diagnostic
    (flat_groups: of the first draw under --dynamic_sampling, whose kept batch reads ~0), then
    its held-out greedy accuracy at the end, its SFT checkpoint's, and the paired difference on
    the same problems [95% CI] (nanorlsp.tooling.stats)."""
    from nanorlsp.tooling.stats import paired_ci, significant
    head = ["run", "steps", *DIAG_KEYS, "held-out acc", "SFT acc", "vs SFT (points, paired)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for c in grid(a):
        d = os.path.join(a.out_dir, "diag", diag_name(c))
        path = os.path.join(d, "metrics.jsonl")
        rows = ([r for x in open(path) if "acc" in (r := json.loads(x))]
                if os.path.exists(path) else [])
        rows = [dict(r, flat_groups=r.get("flat_first_draw", r.get("flat_groups"))) for r in rows]
        ref_path = os.path.join(a.out_dir, "diag", f"ref_{c['sft']}.json")
        ev_path = os.path.join(d, "eval_greedy.json")
        ev, ref = read(ev_path), read(ref_path)
        cells = [("-" if (m := mean_of(rows, k)) is None else f"{m:.3g}") for k in DIAG_KEYS]
        got, base = correct(ev_path), correct(ref_path)
        common = sorted(set(got) & set(base))
        diff = "-"
        if common:
            m, lo, hi = paired_ci([got[q] for q in common], [base[q] for q in common])
            diff = (f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                    + ("*" if significant(lo, hi) else ""))
        lines.append("| " + " | ".join([diag_name(c), str(len(rows)), *cells,
                                        f"{ev['pass@1']:.3f}" if ev else "-",
                                        f"{ref['pass@1']:.3f}" if ref else "-", diff]) + " |")
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# 3. final: the recipe per reward, then every eval


def final_names(a) -> dict[str, str]:
    """{eval name: checkpoint}: base, sft and one per final reward."""
    out = {"base": base_model(a), "sft": sft_dir(a, a.final_sft)}
    for r in a.final_rewards.split(","):
        out[FINAL_NAMES[r]] = os.path.join(a.out_dir, "final", FINAL_NAMES[r])
    return out


def eval_sets(a) -> list[tuple[str, int, int]]:
    return [(s, int(n), int(t)) for s, n, t in zip(a.sets.split(","), a.limits.split(","),
                                                   a.tokens.split(","))]


def out_path(a, name: str, s: str) -> str:
    return os.path.join(a.results_dir, f"{name}.json" if s == "arith" else f"{name}.{s}.json")


def smoke_data(a) -> str:
    """The smoke's real-set stand-in: three short problems as JSONL (the tiny model's context
    cannot hold GSM8K's), read through eval.py's real-set path."""
    path = os.path.join(a.out_dir, "smoke_real.jsonl")
    if not os.path.exists(path) and not a.dry_run:
        atomic_write(path, "".join(json.dumps({"problem": f"What is {x} + {x}?",
                                               "answer": str(2 * x)}) + "\n" for x in (2, 3, 4)))
    return path


def stage_final(R: Runner) -> None:
    a = R.args
    sft = sft_ready(a, a.final_sft)
    jobs = {}
    for r in a.final_rewards.split(","):
        coef = f" --explore_coef {a.rlsp_coef}" if r == "rlsp" and a.rlsp_coef is not None else ""
        d = os.path.join(a.out_dir, "final", FINAL_NAMES[r])
        jobs[FINAL_NAMES[r]] = (lambda r=r, d=d, coef=coef: train(
            R, f"final/{FINAL_NAMES[r]}", "train_rl.py", d, a.final_steps,
            ["--init_from", sft, *rl_flags(a, {"explore_reward": r}, a.recipe + coef)]))
    R.all(jobs)
    # set-major: every checkpoint's arith eval (the headline table) before the longer sets
    jobs = {}
    for s, n, t in eval_sets(a):
        for name, init in final_names(a).items():
            data = smoke_data(a) if a.smoke and s != "arith" else None
            jobs[f"{name}.{s}"] = (lambda name=name, init=init, s=s, n=n, t=t, data=data: evaluate(
                R, f"eval/{name}.{s}", init, out_path(a, name, s), s, n, t, data))
    R.all(jobs)


# -----------------------------------------------------------------------------
# 4. the report


def correct(path: str) -> dict[str, float]:
    """{problem: 0/1} of a greedy eval's transcripts ({} before it ran)."""
    tp = path[:-len(".json")] + ".transcripts.jsonl"
    if not os.path.exists(tp):
        return {}
    return {r["problem"]: float(r["correct"]) for x in open(tp) if (r := json.loads(x))}


def report_final(a) -> str:
    """The results table: arith greedy pass@1 [95% CI], paired vs SFT [95% CI], levels, mean
    reply tokens, the other sets' pass@1, dtype. Bootstraps: nanorlsp.tooling.stats."""
    from nanorlsp.tooling.stats import bootstrap_ci, paired_ci, significant
    sets = [s for s, _, _ in eval_sets(a) if s != "arith"]
    meta = read(os.path.join(a.results_dir, "evals.json")) or {}
    head = ["checkpoint", "arith pass@1 (greedy) [95% CI]", "vs SFT (points, paired)",
            "levels 1 / 2 / 3 / 4 / 5", "mean reply tokens", *sets, "dtype"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    sft = correct(out_path(a, "sft", "arith"))
    for name in final_names(a):
        p = out_path(a, name, "arith")
        e, c = read(p), correct(p)
        if e is None or not c:
            lines.append("| " + " | ".join([name] + ["-"] * (len(head) - 1)) + " |")
            continue
        m, lo, hi = bootstrap_ci(list(c.values()))
        cell = "-"
        common = sorted(set(c) & set(sft))
        if name != "sft" and common:
            d, dlo, dhi = paired_ci([c[q] for q in common], [sft[q] for q in common])
            cell = (f"{100 * d:+.1f} [{100 * dlo:+.1f}, {100 * dhi:+.1f}]"
                    + ("*" if significant(dlo, dhi) else ""))
        lv = e.get("accuracy_by_level", {})
        others = []
        for s in sets:
            o = read(out_path(a, name, s))
            others.append(f"{100 * o['pass@1']:.1f} ({o['n_problems']})" if o else "-")
        lines.append("| " + " | ".join([
            name, f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]", cell,
            " / ".join(f"{lv[k]:.2f}" if k in lv else "-" for k in "12345"),
            f"{e['mean_response_tokens']:.0f}", *others,
            meta.get(os.path.basename(p), {}).get("dtype", "?")]) + " |")
    return ("Greedy pass@1 in %, 95% bootstrap intervals over problems; vs SFT: the paired "
            "difference on the same problems (* when its interval excludes 0); other sets: "
            "pass@1 (problems).\n\n" + "\n".join(lines) + "\n")


def main(argv=None) -> None:
    a = parse_args(argv)
    try:
        if a.stages and not a.dry_run:   # one driver per out_dir (the kernel drops the lock
            lock_run_dir(a.out_dir)      # when we die); a report alone reads while one runs
        R = Runner(a)
        signal.signal(signal.SIGTERM, R.stop)
        signal.signal(signal.SIGINT, R.stop)
        print(f"smollm2: stages {','.join(a.stages) or '-'}, dtype {a.dtype}, {a.jobs} job(s) "
              f"x {a.threads} thread(s), out {a.out_dir}", flush=True)
        for s in a.stages:
            t0 = time.time()
            {"sft": stage_sft, "diag": stage_diag, "final": stage_final}[s](R)
            print(f"smollm2: stage {s} finished ({time.time() - t0:.0f} s this invocation)",
                  flush=True)
        if a.dry_run:
            return
        if a.report == "diag" or "diag" in a.stages:
            text = report_diag(a)
            atomic_write(os.path.join(a.out_dir, "diag.md"), text)
            print(text)
        if a.report == "final" or "final" in a.stages:
            text = report_final(a)
            os.makedirs(a.results_dir, exist_ok=True)
            atomic_write(os.path.join(a.results_dir, "README.md"),
                         "# SmolLM2-135M-Instruct: SFT + RL on arith\n\nWritten by "
                         "`python experiments/smollm2.py --report final`; the commands are in "
                         "docs/real_weights.md, each eval's dtype and time in evals.json. The "
                         "table holds this run's rewards; other outputs in this folder (other "
                         "configs, a second seed) are reported there too.\n\n"
                         + text)
            print(text)
    except UserError as e:
        die(str(e))


if __name__ == "__main__":
    main()
