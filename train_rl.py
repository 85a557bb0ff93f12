"""
Stages 2 and 3 of RLSP: RL against the outcome verifier with an exploration reward.

    python train_rl.py                                   # out/sft -> out/rl, REINFORCE + rlsp
    python train_rl.py --algo ppo --out_dir out/rl_ppo
    python train_rl.py --explore_reward none --out_dir out/rl_none    # verifier-only ablation

One step, the loop below, in named phases (nanorlsp/rlsp.py): draw the step's prompts; rollout
(G replies per prompt from the KV-cached sampler, log-probs kept); score (the verifier's
outcome + the exploration reward - the repetition guard, nanorlsp/rewards.py); update
(REINFORCE with a group baseline and a k3 KL to the frozen SFT reference, rlsp.reinforce_update,
or PPO, nanorlsp/ppo.py, or the peers' objectives: GRPO's clip, GSPO, CISPO, Dr. GRPO, DAPO's
flags, nanorlsp/objectives.py); log one line, metrics.jsonl and transcripts in samples.jsonl.
Every --eval_interval steps: greedy held-out accuracy and an atomic checkpoint (--resume).

Footguns: the same script runs under torchrun (every rank builds the same global batch and
rolls out its share; the loss is normalised by the global token count, so N processes equal
one); --lora_rank, --fsdp, the bf16 rollout copy and --resume are behind setup_policy
(nanorlsp/policy.py). Simplifications named, and the PPO / LoRA / torchrun details: docs/rl.md.
"""
import gc
import os
import sys
import time

import torch
from tqdm import tqdm

from data import get_task
from nanorlsp import dist, objectives
from nanorlsp.tooling import tracking
from nanorlsp.behaviors import frequencies
from nanorlsp.checkpoint import CheckpointError, open_run
from nanorlsp.common import (ArgParser, UserError, append_jsonl, comma_list, die, finite_float,
                             float_range, nonneg_int, positive_int, reset_logs, resolve_dtype)
from nanorlsp.economy import ECONOMY, SCHEDULES, ExploreSchedule
from nanorlsp.evaluation import task_accuracy
from nanorlsp.model import LORA_TARGETS
from nanorlsp.policy import setup_policy
from nanorlsp.repetition import token_pieces
from nanorlsp.rewards import EXPLORE, RewardConfig
from nanorlsp.rl import KL_ESTIMATORS, LOSS_AGG, POLICY_LOSSES
from nanorlsp.rlsp import (draw_prompts, fitting, my_prompts, reinforce_update, rollout, score,
                          step_record)

# -----------------------------------------------------------------------------
# arguments

ap = ArgParser(description="RLSP stages 2-3: RL with the verifier and an exploration reward.")
# core
ap.add_argument("--init_from", default="out/sft", help="the SFT checkpoint (policy and reference)")
ap.add_argument("--task", default="arith",
                help="synthetic: arith | countdown | countdown_small; real: gsm8k | math "
                     "(../shared/data files)")
ap.add_argument("--levels", default=None,
                help="arith only: train on these difficulty levels, e.g. 1,2 (a curriculum for weak "
                     "models); held-out evaluation keeps every level")
ap.add_argument("--data", default=None, help="a real task's train problems (JSONL) instead")
ap.add_argument("--max_steps", type=positive_int, default=150)
ap.add_argument("--algo", default="reinforce", choices=["reinforce", "ppo"])
ap.add_argument("--n_samples", type=positive_int, default=8, help="G: rollouts per prompt")
ap.add_argument("--prompts_per_step", type=positive_int, default=16,
                help="global batch of prompts (split across torchrun ranks)")
ap.add_argument("--max_new_tokens", type=positive_int, default=224)
ap.add_argument("--temperature", type=finite_float, default=1.0)
ap.add_argument("--kl_coef", type=float_range(0), default=0.05)
ap.add_argument("--kl_estimator", default="k3", choices=KL_ESTIMATORS,
                help="REINFORCE's KL loss term: k3 (gradient of the forward KL, as TRL), k2 or k1 "
                     "(gradient of the reverse KL): nanorlsp/rl.py. The logged kl is its value "
                     "(PPO, whose reward holds k1, logs k3)")
ap.add_argument("--baseline", default="mean", choices=["mean", "loo"])
ap.add_argument("--std_norm", action="store_true", help="divide advantages by the group std")
ap.add_argument("--lr", type=float_range(0, lo_open=True), default=5e-5)
ap.add_argument("--grad_clip", type=float_range(0), default=1.0, help="max grad norm (0: off)")
ap.add_argument("--tis_cap", type=float_range(0), default=0.0,
                help="truncated importance sampling, weight each token's loss by "
                     "min(pi_train / pi_rollout, cap) (0: off); for rollouts from a bf16 copy. "
                     "PPO: pi_train is the old policy's training forward, as veRL and TRL")
ap.add_argument("--seed", type=int, default=1337)
# reward (nanorlsp/rewards.py; adaptive thinking: nanorlsp/economy.py)
ap.add_argument("--explore_reward", default="rlsp", choices=list(EXPLORE),
                help="rlsp: -lambda / L, L the reasoning tokens less repeated lines; rlsp_paper: "
                     "the authors' form (L = characters before the first \\boxed / 4, -0.5 "
                     "without a box, no repetition guard, clipped to [-10, 10]); linear, cosine; "
                     "none: verifier only")
ap.add_argument("--explore_coef", type=float_range(0), default=0.5, help="lambda of the exploration reward")
ap.add_argument("--explore_schedule", default="constant", choices=SCHEDULES,
                help="constant | linear (decay to 0) | threshold (off once the batch accuracy "
                     "reaches --acc_threshold) | adaptive (per prompt: pay for exploring when its "
                     "group accuracy is below --acc_threshold, charge for length when above)")
ap.add_argument("--schedule_steps", type=nonneg_int, default=0,
                help="the linear schedule's horizon, the step where it reaches 0 (0: the run's "
                     "first --max_steps). Saved with the run: --resume with a larger --max_steps "
                     "goes on at 0, it does not move the horizon")
ap.add_argument("--acc_threshold", type=float_range(0, 1), default=0.9,
                help="the threshold and adaptive schedules' accuracy threshold")
ap.add_argument("--economy", default="none", choices=ECONOMY,
                help="a group-relative length term (nanorlsp/economy.py): kimi (Kimi k1.5), alp "
                     "(adaptive length penalty), budget (ours: the share beyond the group's "
                     "shortest right reply), flip (the adaptive schedule's sign-flipped "
                     "exploration term on easy prompts), none. With --explore_schedule adaptive "
                     "it takes the easy prompts; otherwise every prompt")
ap.add_argument("--economy_coef", type=float_range(0), default=0.1,
                help="the economy term's weight (alp: per token)")
# the objective (nanorlsp/objectives.py; equations and sources: docs/rl.md)
ap.add_argument("--loss_agg", default=None, choices=LOSS_AGG,
                help="token_mean: one mean over the batch's tokens; seq_mean: each reply's mean, "
                     "then over replies (GRPO, GSPO); constant: token sum / (rows x "
                     "--max_new_tokens) (Dr. GRPO). Default token_mean (gspo: seq_mean)")
ap.add_argument("--policy_loss", default="reinforce", choices=POLICY_LOSSES,
                help="reinforce (on-policy, one update); clip: GRPO's clipped per-token ratio "
                     "(TRL's num_iterations); gspo: a clipped sequence ratio (GSPO); cispo: a "
                     "clipped stop-gradient weight on every token (MiniMax-M1)")
ap.add_argument("--updates_per_batch", type=positive_int, default=1,
                help="clip | gspo | cispo: optimizer steps on each batch (the ratio is 1 at the "
                     "first)")
ap.add_argument("--clip_high", type=float_range(0, lo_open=True), default=None,
                help="DAPO's clip-higher, eps_high >= --clip (default: --clip; gspo: 4e-4)")
ap.add_argument("--dynamic_sampling", action="store_true",
                help="DAPO: groups whose replies are all right or all wrong leave the batch, "
                     "more prompts are drawn until it is full (one process only)")
ap.add_argument("--max_redraws", type=nonneg_int, default=4,
                help="--dynamic_sampling: at most this many redraws per step, then the step "
                     "trains on the groups it has")
ap.add_argument("--overlong_buffer", type=nonneg_int, default=0,
                help="DAPO's soft overlong penalty: 0 to -1 over the last N tokens before "
                     "--max_new_tokens, -1 for a cut reply, a reward part of its own (0: off)")
ap.add_argument("--mask_truncated", action="store_true",
                help="replies cut at --max_new_tokens leave the loss (still logged)")
# PPO (--algo ppo: nanorlsp/ppo.py)
ap.add_argument("--ppo_epochs", type=positive_int, default=2)
ap.add_argument("--minibatches", type=positive_int, default=2,
                help="PPO minibatches per epoch (each a slice of the step's prompts)")
ap.add_argument("--clip", type=float_range(0, 1, lo_open=True, hi_open=True), default=None,
                help="the ratio clip's epsilon (eps_low): PPO, --policy_loss clip | gspo | cispo "
                     "(default 0.2; gspo: 3e-4, GSPO's, as it clips a reply's mean log-ratio)")
ap.add_argument("--value_clip", type=float_range(0, lo_open=True), default=0.2)
ap.add_argument("--vf_coef", type=float_range(0), default=0.5)
ap.add_argument("--gamma", type=float_range(0, 1), default=1.0)
ap.add_argument("--gae_lambda", type=float_range(0, 1), default=0.95)
# scale: memory, devices, LoRA (nanorlsp/policy.py)
ap.add_argument("--grad_accum", type=positive_int, default=1,
                help="micro-batches per update (each rank splits its rows; same result, less memory)")
ap.add_argument("--fsdp", action="store_true",
                help="torchrun: shard policy, reference and optimizer state (FSDP2) instead of DDP")
ap.add_argument("--act_ckpt", action="store_true", help="activation checkpointing per block")
ap.add_argument("--lora_rank", type=nonneg_int, default=0,
                help="LoRA: freeze --init_from and train rank-R adapters; the reference is the "
                     "same weights with the adapters off (0: full fine-tuning)")
ap.add_argument("--lora_alpha", type=finite_float, default=32.0,
                help="LoRA: the adapters' output is scaled by alpha / rank")
ap.add_argument("--lora_targets", type=comma_list(LORA_TARGETS), default=LORA_TARGETS,
                help="LoRA: the projections that get adapters, comma-separated "
                     f"(default all: {','.join(LORA_TARGETS)})")
ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
# run management
ap.add_argument("--out_dir", default="out/rl")
ap.add_argument("--resume", action="store_true", help="continue the run in --out_dir")
ap.add_argument("--overwrite", action="store_true", help="start over in a --out_dir with a checkpoint")
ap.add_argument("--eval_interval", type=positive_int, default=50)
ap.add_argument("--eval_problems", type=nonneg_int, default=500)
ap.add_argument("--log_samples", type=nonneg_int, default=4, help="transcripts per step in samples.jsonl")
ap.add_argument("--wandb", default=None, metavar="PROJECT",
                help="also log metrics.jsonl and the transcripts to this Weights & Biases project "
                     "(pip install wandb; WANDB_MODE=offline: no network, files in OUT_DIR/wandb)")
ap.add_argument("--max_bad_steps", type=positive_int, default=3,
                help="stop after this many non-finite steps in a row (each one is skipped)")
args = ap.parse_args()

# --resume: the run's own settings replace the defaults *before* anything below reads args (the
# task, the reward config, the dtype, the FSDP check, PPO's minibatches), except these if typed
# (an explicit reference is checked against the run's model config in setup_policy)
try:
    state = open_run(args, sys.argv[1:], keep={"max_steps", "device", "init_from", "wandb"})
except UserError as e:
    die(str(e))
if args.tis_cap and args.tis_cap < 1:
    die(f"--tis_cap {args.tis_cap:g}: a cap >= 1 on the importance weights (0: off)")
if not args.schedule_steps:
    # the horizon of the run's first start (a checkpoint saved before the flag: its --max_steps)
    args.schedule_steps = state["args"]["max_steps"] if state is not None else args.max_steps

try:
    task = get_task(args.task, args.data)
    d = dist.setup(args.device, args.fsdp)
    device = d.device
    dtype = resolve_dtype(args.dtype, device)
    rcfg = RewardConfig(explore=args.explore_reward, coef=args.explore_coef,
                        schedule=args.explore_schedule, schedule_steps=args.schedule_steps,
                        acc_threshold=args.acc_threshold, economy=args.economy,
                        economy_coef=args.economy_coef)
except (ValueError, UserError) as e:
    die(str(e))
for note in getattr(task, "NOTES", ()) if d.main else ():   # a real set's skipped rows
    print(f"note: {note}")
try:
    objectives.check_flags(args, d.world)   # the objective's defaults; bad combinations refused
except UserError as e:
    die(str(e))
if args.temperature <= 0:
    die("--temperature must be > 0 for RL (rollouts must explore)")
if args.n_samples < 2 and args.algo == "reinforce":
    # r_i - mean of a group of one is 0: every advantage 0, only the KL would train
    die("--n_samples 1 gives every REINFORCE advantage 0 (the baseline is the group's own "
        "mean): use --n_samples >= 2, or --algo ppo (a value-head baseline)")
M = args.minibatches if args.algo == "ppo" else 1
if args.prompts_per_step % (M * d.world):
    die(f"--prompts_per_step {args.prompts_per_step} must be a multiple of "
        f"{'--minibatches x ' if M > 1 else ''}ranks = {M * d.world}")

# -----------------------------------------------------------------------------
# the model (one name: policy), the problems, the logs

try:
    policy, tok, optimizer, start_step = setup_policy(args, d, state, dtype, sys.argv[1:])
except (UserError, CheckpointError, ValueError) as e:
    die(str(e))
if d.main:
    os.makedirs(args.out_dir, exist_ok=True)

if args.levels:
    try:
        levels = [int(x) for x in args.levels.split(",")]
        if args.task != "arith" or not all(1 <= lv <= 5 for lv in levels):
            raise ValueError
    except ValueError:
        die(f"--levels {args.levels}: a comma list of arith levels 1-5 (with --task arith)")
    train_problems = [p for lv in levels for p in task.make_problems(
        "train", 20000 // len(levels), seed=args.seed + lv, level=lv, distinct=False)]
else:
    # a pool of distinct prompts (a task with fewer distinct problems says how many: RL_POOL)
    train_problems = task.make_problems("train", getattr(task, "RL_POOL", 20000), seed=args.seed)
eval_problems = task.make_problems("test", args.eval_problems, seed=0) if args.eval_problems else []
ctx = policy.gpt.config.max_seq_len
train_problems = fitting(train_problems, tok, ctx, args.max_new_tokens, "train", d.main)
eval_problems = fitting(eval_problems, tok, ctx, args.max_new_tokens, "held-out", d.main)
if args.prompts_per_step > len(train_problems):
    die(f"--prompts_per_step {args.prompts_per_step} is more than the {len(train_problems)} "
        "train problems that fit")
PIECES = token_pieces(tok)  # every token's bytes: the repetition guard reads lines
EXTRA = objectives.active(args)   # PPO, --policy_loss, DAPO: nanorlsp/objectives.py
G = args.n_samples
mine = my_prompts(args.prompts_per_step, M, d.rank, d.world)   # this rank's prompts of a step
# the threshold schedule's switch-off is a latch saved with the run (nanorlsp/economy.py)
explore = ExploreSchedule(rcfg, G, bool(state.get("explore_off", False)) if state else False)

if d.main:
    reset_logs(args.out_dir, ("metrics.jsonl", "samples.jsonl"),
               start_step if state is not None else None)
try:
    # --wandb: W&B mirrors what the logs get (rank 0 only; nanorlsp/tooling/tracking.py)
    wandb_run = (tracking.start(args.wandb, args.out_dir, vars(args), resume=state is not None)
                 if d.main else None)
except UserError as e:
    die(str(e))


def log(name: str, rec: dict):
    if d.main:
        append_jsonl(os.path.join(args.out_dir, name), rec)
        if name == "metrics.jsonl":
            tracking.log(wandb_run, rec)  # --wandb: the same record (nanorlsp/tooling/tracking.py)


def say(msg: str):
    if d.main:
        tqdm.write(msg)


def evaluate(step: int):
    """Greedy replies to this rank's share of the held-out problems, gathered back in order on
    every rank; said and logged."""
    _, mine_ = task_accuracy(policy.sampler(), tok, task, eval_problems[d.rank::d.world],
                             args.max_new_tokens, temperature=0.0, batch_size=128)
    replies = dist.gather_shards(mine_, d)
    ev = {"val_acc": sum(r["correct"] for r in replies) / len(replies),
          "val_mean_tokens": sum(r["n_tokens"] for r in replies) / len(replies),
          "val_behaviors": frequencies([r["text"] for r in replies], args.task)}
    say(f"eval step {step}{' (the SFT policy)' if step == 0 else ''}: held-out acc "
        f"{ev['val_acc']:.3f} | mean reply {ev['val_mean_tokens']:.0f} tokens | behaviours "
        f"{ev['val_behaviors']}")
    log("metrics.jsonl", dict(step=step, **ev))


def log_step(step: int, prompts: list[dict], batch, sc: dict, out: dict, timings: dict):
    """The step's metrics.jsonl line, --log_samples transcripts and one printed line."""
    rec, rows = step_record(batch, sc, out, timings, args.task, d)
    rec = dict(step=step, **rec)
    log("metrics.jsonl", rec)
    transcripts = [dict(step=step, prompt=prompts[r["i"] // G]["prompt"], response=r["text"],
                        correct=r["correct"], reward=r["total"]) for r in rows[:args.log_samples]]
    for tr in transcripts:
        log("samples.jsonl", tr)
    if d.main:
        tracking.log_samples(wandb_run, step, transcripts)  # --wandb: a table per step
    say(f"step {step:4d} | reward {rec['reward']:+.3f} (out {rec['outcome']:+.3f} "
        f"exp {rec['explore']:+.3f} rep {rec['repetition']:+.3f} eco {rec['economy']:+.3f}) | "
        f"acc {rec['acc']:.3f} | len {rec['len_mean']:.0f} | flat {rec['flat_groups']:.2f} | "
        f"no-ans {rec['no_answer']:.2f} | trunc {rec['truncated']:.2f} | kl {rec['kl']:.4f} | "
        f"ent {rec['entropy']:.3f} | clip {rec['clip_frac']:.3f} | gnorm {rec['grad_norm']:.2f} "
        f"| dlogp {rec['logp_diff']:.1e} | {rec['tok_per_s']:.0f} tok/s | gen "
        f"{timings['t_gen']:.1f}s score {timings['t_score']:.2f}s train {timings['t_train']:.1f}s")


def sample_more(more: list[dict], step: int, k: int):
    """--dynamic_sampling's redraw k of a step: rolled out with its own seed, then scored."""
    b = rollout(policy, tok, more, range(len(more)), objectives.redraw_args(args, k), step)
    return b, objectives.shape_rewards(b, score(b, task, tok, explore, step, PIECES), args)


def save(step: int):
    policy.save(args.out_dir, tok, step, vars(args), optimizer,
                extra={"task": args.task, "explore_off": explore.latched})


def skipped_step(step: int, updates: int, bad_steps: int):
    """A non-finite reward, loss or gradient: logged, said; --max_bad_steps in a row stop."""
    if not updates:
        log("metrics.jsonl", dict(step=step, skipped="non-finite reward, loss or gradient"))
    n, what = ((args.ppo_epochs * M, "minibatch updates") if args.algo == "ppo" else
               (args.updates_per_batch, "updates"))
    say(f"step {step}: non-finite reward, loss or gradient, " + (
        f"partially applied ({updates} of {n} {what})"
        if updates else "update skipped") + f" ({bad_steps} in a row)")
    if bad_steps >= args.max_bad_steps:
        die(f"{bad_steps} non-finite steps in a row (last at step {step}); the last "
            f"checkpoint in {args.out_dir} is intact")


# -----------------------------------------------------------------------------
# the loop: one RLSP step per iteration

if state is None and eval_problems:
    evaluate(0)
bad_steps = 0
pbar = tqdm(range(start_step, args.max_steps), initial=start_step, total=args.max_steps,
            desc="rl", dynamic_ncols=True, disable=None if d.main else True)
step = start_step
try:
    for step in pbar:
        done = step + 1
        # -- rollout: this rank's prompts x G samples, log-probs of the sampled tokens
        t0 = time.time()
        prompts = draw_prompts(train_problems, args.seed, step, args.prompts_per_step)
        batch = rollout(policy, tok, prompts, mine, args, step)

        # -- score: verifier + exploration + repetition (+ economy)
        t1 = time.time()
        sc = score(batch, task, tok, explore, step, PIECES)
        t_score = time.time() - t1
        if EXTRA:   # DAPO: --overlong_buffer's part; --dynamic_sampling's redraws (as generation)
            prompts, batch, sc = objectives.shape(prompts, batch, sc, sample_more,
                                                  train_problems, step, args)
        rewards = sc["total"].to(device)                                  # (B,)
        t_gen = time.time() - t0 - t_score

        # -- update: a non-finite reward (on any rank) skips it on every rank
        t2 = time.time()
        if dist.any_rank(not bool(torch.isfinite(rewards).all()), device):
            out = dict(updates=0, skipped=True)
        elif EXTRA:   # PPO or --policy_loss's clipped objectives (nanorlsp/objectives.py)
            out = objectives.update(policy, optimizer, batch, sc, args)
        else:         # the default: REINFORCE with a group baseline (nanorlsp/rlsp.py)
            out = reinforce_update(policy, optimizer, batch, rewards, args)
        t_train = time.time() - t2

        # -- log; PPO: the minibatch updates before a non-finite one stay applied (partial)
        bad_steps = bad_steps + 1 if out["skipped"] else 0
        if out["skipped"]:
            skipped_step(done, out["updates"], bad_steps)
        if out["updates"]:
            log_step(done, prompts, batch, sc, out,
                     dict(t_gen=t_gen, t_score=t_score, t_train=t_train))

        # evaluate and save on schedule, and always at the end: a skipped final step included
        # (the run's last line says where the checkpoint is)
        if (done % args.eval_interval == 0 and out["updates"]) or done == args.max_steps:
            if eval_problems:
                evaluate(done)
            save(done)
except KeyboardInterrupt:
    pbar.close()
    die(f"interrupted at step {step}; the last checkpoint in {args.out_dir} is intact "
        "(continue with --resume)", code=130)
pbar.close()
if d.main:
    print(f"done: {args.max_steps} steps; checkpoint in {args.out_dir}")
tracking.finish(wandb_run)
# DDP's reducer holds the process group: free it first, so the group is torn down here, in
# order, not by the interpreter's exit (gloo then aborted 1 run in 12 after finishing)
del policy, optimizer
gc.collect()
dist.shutdown()
