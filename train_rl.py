"""
Stages 2 and 3 of RLSP: RL against the outcome verifier with an exploration reward.

    python train_rl.py                                   # out/sft -> out/rl, REINFORCE + rlsp
    python train_rl.py --algo ppo --out_dir out/rl_ppo
    python train_rl.py --explore_reward none --out_dir out/rl_none    # verifier-only ablation

Each step, top to bottom: sample prompts from the task's train split; roll out n_samples
responses per prompt with the KV-cached sampler (eval mode, no grad, log-probs kept); score them
(verifier outcome + exploration + repetition guard, nanorlsp/rewards.py); compute advantages
(group baseline, or GAE with a value head for PPO); update; log one line, metrics.jsonl and a few
transcripts in samples.jsonl. Every --eval_interval steps: greedy held-out accuracy and an atomic
checkpoint; --resume continues from it.

torchrun (nanorlsp/dist.py): every rank builds the same global batch of prompts and rolls out its
share of them; rows are sampled with keys = their index in the global batch, so the rollouts do
not depend on the number of ranks; each rank's loss is normalised by the global token count, and
DDP averages the gradients, so an N-process step equals the 1-process step on the same batch
(tests/test_dist.py). Metrics are gathered from all ranks; rank 0 writes logs and checkpoints.

Simplifications, named (STYLE.md #9): the reasoning length L is counted by re-encoding the text
before the extracted answer (the one the checker reads: task.answer_start), not the generated ids
themselves, which may tokenize differently at the cut; PPO's value head is a linear layer on the
policy's final hidden state (shared trunk, as in nanochat-style small setups: no second model
copy in memory), trained with the policy in one backward pass, in float32.
KL to the frozen SFT reference: a loss term for REINFORCE (--kl_estimator, default k3 as GRPO;
nanorlsp/rl.py says which KL each one's gradient follows), a per-token k1 penalty in the reward
for PPO (OpenRLHF, the paper's code). PPO's old log-probs come from the training forward (as
OpenRLHF and veRL recompute them), not from the sampler's copy; every step logs logp_diff, the
mean |sampler log-prob - training log-prob|, and the loss can reweight by it (--tis_cap).

LoRA (--lora_rank R, nanorlsp/model.py): the --init_from model is loaded once, frozen in the
compute dtype (bf16 on CUDA), with float32 rank-R adapters on --lora_targets; only the adapters
(and PPO's value head) train and sit in the optimizer. The frozen reference is the same weights
with the adapters switched off (`with lora_disabled(actor)`), so no reference is loaded: the
reference log-probs cost one more forward with the adapters off, as the reference forward did
before, and no memory for a second copy; under FSDP the same sharded weights serve both. The
policy samples with its own weights (adapters unmerged: two rank-R matmuls more per projection
and token, no copy of the weights); under FSDP the gathered rollout copy gets the adapters
merged into its weights at each refresh (a plain model: the cheapest decode). The checkpoint
holds the adapters and names the base (nanorlsp/checkpoint.py); a LoRA --init_from (a LoRA SFT
run) comes merged, and its merge is the base these adapters adapt. LoRA usually wants ~10x the
full fine-tuning --lr ("LoRA Without Regret", Schulman et al. 2025).
"""
import gc
import os
import random
import sys
import time

import torch
import torch.nn as nn
from tqdm import tqdm

from data import get_task
from nanorlsp import dist, tracking
from nanorlsp.behaviors import frequencies
from nanorlsp.checkpoint import (CheckpointError, attach_lora, load_model, model_from_state,
                                 open_run, save_checkpoint)
from nanorlsp.common import (ArgParser, UserError, append_jsonl, autocast, comma_list, die,
                             explicit_flags, finite_float, float_range, nonneg_int, positive_int,
                             reset_logs, resolve_dtype)
from nanorlsp.evaluation import task_accuracy, user_prompt
from nanorlsp.model import GPT, LORA_TARGETS, is_lora_key, lora_disabled
from nanorlsp.economy import ECONOMY, SCHEDULES, ExploreSchedule
from nanorlsp.repetition import token_pieces
from nanorlsp.rewards import EXPLORE, RewardConfig, score
from nanorlsp.rl import (KL_ESTIMATORS, WithValues, gae, group_advantages, kl_penalty, kl_value,
                         masked_mean, ppo_policy_loss, reinforce_loss, token_logprobs,
                         token_logprobs_and_entropy,
                         truncated_is_weights, value_loss)
from nanorlsp.sampler import sample
from nanorlsp.tokenizer import load_tokenizer

# -----------------------------------------------------------------------------
# arguments

ap = ArgParser(description="RLSP stages 2-3: RL with the verifier and an exploration reward.")
ap.add_argument("--init_from", default="out/sft", help="the SFT checkpoint (policy and reference)")
ap.add_argument("--task", default="arith",
                help="synthetic: arith | countdown | countdown_small; real: gsm8k | math "
                     "(../shared/data files)")
ap.add_argument("--levels", default=None,
                help="arith only: train on these difficulty levels, e.g. 1,2 (a curriculum for weak "
                     "models); held-out evaluation keeps every level")
ap.add_argument("--data", default=None, help="a real task's train problems (JSONL) instead")
ap.add_argument("--out_dir", default="out/rl")
ap.add_argument("--resume", action="store_true", help="continue the run in --out_dir")
ap.add_argument("--overwrite", action="store_true", help="start over in a --out_dir with a checkpoint")
ap.add_argument("--max_steps", type=positive_int, default=150)
ap.add_argument("--algo", default="reinforce", choices=["reinforce", "ppo"])
ap.add_argument("--explore_reward", default="rlsp", choices=list(EXPLORE))
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
ap.add_argument("--kl_coef", type=float_range(0), default=0.05)
ap.add_argument("--kl_estimator", default="k3", choices=KL_ESTIMATORS,
                help="REINFORCE's KL loss term: k3 (gradient of the forward KL, as TRL), k2 or k1 "
                     "(gradient of the reverse KL): nanorlsp/rl.py. The logged kl is its value "
                     "(PPO, whose reward holds k1, logs k3)")
ap.add_argument("--n_samples", type=positive_int, default=8, help="G: rollouts per prompt")
ap.add_argument("--prompts_per_step", type=positive_int, default=16,
                help="global batch of prompts (split across torchrun ranks)")
ap.add_argument("--max_new_tokens", type=positive_int, default=224)
ap.add_argument("--temperature", type=finite_float, default=1.0)
ap.add_argument("--tis_cap", type=float_range(0), default=0.0,
                help="truncated importance sampling, weight each token's loss by "
                     "min(pi_train / pi_rollout, cap) (0: off); for rollouts from a bf16 copy. "
                     "PPO: pi_train is the old policy's training forward, as veRL and TRL")
ap.add_argument("--baseline", default="mean", choices=["mean", "loo"])
ap.add_argument("--std_norm", action="store_true", help="divide advantages by the group std")
ap.add_argument("--lr", type=float_range(0, lo_open=True), default=5e-5)
ap.add_argument("--grad_clip", type=float_range(0), default=1.0, help="max grad norm (0: off)")
ap.add_argument("--ppo_epochs", type=positive_int, default=2)
ap.add_argument("--minibatches", type=positive_int, default=2,
                help="PPO minibatches per epoch (each a slice of the step's prompts)")
ap.add_argument("--clip", type=float_range(0, 1, lo_open=True, hi_open=True), default=0.2,
                help="PPO ratio clip epsilon")
ap.add_argument("--value_clip", type=float_range(0, lo_open=True), default=0.2)
ap.add_argument("--vf_coef", type=float_range(0), default=0.5)
ap.add_argument("--gamma", type=float_range(0, 1), default=1.0)
ap.add_argument("--gae_lambda", type=float_range(0, 1), default=0.95)
ap.add_argument("--eval_interval", type=positive_int, default=50)
ap.add_argument("--eval_problems", type=nonneg_int, default=500)
ap.add_argument("--log_samples", type=nonneg_int, default=4, help="transcripts per step in samples.jsonl")
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
ap.add_argument("--seed", type=int, default=1337)
ap.add_argument("--wandb", default=None, metavar="PROJECT",
                help="also log metrics.jsonl and the transcripts to this Weights & Biases project "
                     "(pip install wandb; WANDB_MODE=offline: no network, files in OUT_DIR/wandb)")
ap.add_argument("--max_bad_steps", type=positive_int, default=3,
                help="stop after this many non-finite steps in a row (each one is skipped)")
args = ap.parse_args()

# --resume: the run's own settings replace the defaults *before* anything below reads args (the
# task, the reward config, the dtype, the FSDP check, PPO's minibatches), except these if typed
# (an explicit reference is checked against the run's model config below)
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
# policy, reference, value head; resume or start fresh

# the frozen reference and the rollout copy only run forward: they are held in the compute dtype
# (bf16 by default on CUDA, or --dtype bfloat16 on a CPU with bf16 matmuls, ~2.5x its float32
# rate: python bench.py --sections peak); logits, log-probs and losses stay float32
frozen_dtype = dtype
lora = args.lora_rank > 0
if state is not None and (state.get("lora") is not None) != lora:
    die(f"{args.out_dir}'s checkpoint and its saved --lora_rank disagree")
if lora:
    # one model: the frozen base in the frozen dtype plus float32 adapters; the reference is
    # that base (adapters off), so none is loaded
    if state is None and os.path.realpath(args.init_from) == os.path.realpath(args.out_dir):
        die("--lora_rank with --out_dir = --init_from would overwrite the base the adapters need")
    try:
        if state is not None:
            if "init_from" in explicit_flags(sys.argv[1:]) and os.path.abspath(
                    args.init_from) != os.path.abspath(state["lora"]["base"]):
                die(f"{args.out_dir} is a LoRA run on {state['lora']['base']}: its reference is "
                    f"that base, not --init_from {args.init_from}")
            policy = model_from_state(state, device, frozen_dtype)  # the base + its adapters
            tok = load_tokenizer(args.out_dir)
        else:
            policy, tok = load_model(args.init_from, device=device, dtype=frozen_dtype)
            torch.manual_seed(args.seed)      # the adapters' init: the same on every rank
            attach_lora(policy, args.init_from, args.lora_rank, args.lora_alpha, args.lora_targets)
    except (CheckpointError, ValueError) as e:
        die(str(e))
    ref = None
else:
    try:
        ref, tok = load_model(args.init_from, device=device, dtype=frozen_dtype)
    except CheckpointError as e:
        die(str(e))
if tok is None:
    die(f"--init_from {args.init_from} holds weights but no tokenizer files: copy the original "
        "model's tokenizer (tokenizer.json, vocab.json + merges.txt or tokenizer.model) into it")
if not lora:
    ref.requires_grad_(False)
    if state is not None:
        try:
            policy = model_from_state(state, device=device)
        except CheckpointError as e:
            die(str(e))
        if policy.config != ref.config:
            die(f"{args.out_dir} holds a checkpoint of another model config than {args.init_from}")
    else:
        policy, _ = load_model(args.init_from, device=device)
if lora:
    n_train = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    if d.main:
        print(f"lora: rank {args.lora_rank}, alpha {args.lora_alpha:g} on "
              f"{','.join(args.lora_targets)}: {n_train / 1e6:.3f}M trainable parameters "
              f"({100 * n_train / policy.num_params():.2f}%), base {policy.lora['base']} frozen "
              f"in {str(frozen_dtype).split('.')[-1]}")
policy.train()
policy.act_ckpt = args.act_ckpt
torch.manual_seed(args.seed)  # the value head's init: the same on every rank and in one process
value_head = nn.Linear(policy.config.n_embd, 1).to(device) if args.algo == "ppo" else None
if state is not None and value_head is not None:
    value_head.load_state_dict(state["value_head"])

# one module for DDP: the policy and PPO's value head, values in float32 (nanorlsp/rl.py)
actor = WithValues(policy, value_head)
ref_actor = WithValues(ref, None) if not lora else None   # LoRA: actor, adapters off
# Under torchrun: DDP (each rank holds everything; gradients all-reduced, averaged) or FSDP2
# (each rank holds 1/N of every parameter, gradient and Adam moment; blocks are gathered just in
# time for forward and backward). One process: the module as is.
train_actor = dist.wrap(actor, policy.layers, d, args.fsdp,
                        fp32=[value_head] if value_head is not None else [])  # values in float32
if args.fsdp and not lora:
    dist.shard(ref_actor, ref.layers, device)
if args.fsdp or (frozen_dtype != torch.float32 and not lora):
    # Rollouts run on a copy in the frozen dtype, refreshed each step: under FSDP a gathered one
    # (the sampler's ~max_new_tokens small forwards would otherwise all-gather every block at
    # every token); in bf16, the fast dtype for the sampler's forwards (autocast would re-cast
    # every weight at every token). Memory: one more copy of the weights (2 bytes/param in bf16).
    # LoRA: the base already is in the frozen dtype, so without FSDP the policy samples itself;
    # FSDP's copy has the adapters merged in (dist.copy_full_state)
    roll = GPT(policy.config).to(device=device, dtype=frozen_dtype).eval()
    roll.requires_grad_(False)
else:
    roll = policy
params = [p for p in train_actor.parameters() if p.requires_grad]  # LoRA: adapters (+ value head)
optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
start_step = 0
if state is not None:
    try:
        dist.load_optimizer(train_actor, optimizer, state["optimizer"], args.fsdp)
    except UserError as e:
        die(str(e))
    start_step = state["step"]


def refresh_rollout_copy():
    """The policy's current weights into the rollout copy (every rank; FSDP gathers them), one
    tensor at a time (a whole gathered fp32 state dict would cost 4 more bytes per parameter);
    a LoRA policy's adapters merged in."""
    if roll is not policy:
        dist.copy_full_state(policy, roll)
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
V = tok.n_vocab  # the sampler never emits the padded embedding rows; the loss masks them too
PIECES = token_pieces(tok)  # every token's bytes: the repetition guard reads lines (rewards.py)


def render(problem: dict) -> list[int]:
    """A problem's prompt as the policy reads it: the chat rendered up to the assistant's turn."""
    return tok.render_prompt([{"role": "user", "content": user_prompt(problem, tok)}])


def fitting(problems: list[dict], split: str) -> list[dict]:
    """The problems whose prompt fits the model's context (max_seq_len); the others are dropped,
    said in one line (a 20M-character problem tried to allocate 400 TB of KV cache). A prompt
    that fits but leaves less than --max_new_tokens is kept, said in a note: the tiny models'
    context is the length they trained on, not a hard limit (rotary positions go on)."""
    ctx = policy.config.max_seq_len
    # a token spells at most `widest` bytes, so a text longer than ctx x widest characters
    # cannot fit: such a text is dropped without being tokenized
    widest = max(len(p) for p in PIECES)
    n = [len(render(p)) if len(user_prompt(p, tok)) <= ctx * widest else ctx + 1
         for p in problems]                                     # prompt tokens (or > ctx)
    long = [k for k, m in enumerate(n) if m >= ctx]             # no room for a single token
    over = sum(ctx - args.max_new_tokens < m < ctx for m in n)
    if d.main and long:
        first = problems[long[0]]
        print(f"{split}: skipped {len(long)} of {len(problems)} problems whose prompt does not "
              f"fit the model's {ctx}-token context (the first: "
              f"{first.get('key', first['prompt'][:40])})")
    if d.main and over:
        print(f"note: {split}: {over} of {len(problems)} prompts leave less than --max_new_tokens "
              f"{args.max_new_tokens} of the model's {ctx}-token context: their longest replies "
              "run past the length it trained on")
    return [p for p, m in zip(problems, n) if m < ctx]


train_problems = fitting(train_problems, "train")
eval_problems = fitting(eval_problems, "held-out")
if args.prompts_per_step > len(train_problems):
    die(f"--prompts_per_step {args.prompts_per_step} is more than the {len(train_problems)} "
        "train problems that fit")


def rollout_batch(step: int):
    """The step's global batch of prompts (a pure function of seed and step, so --resume and
    every rank see the same stream)."""
    rng = random.Random(f"rl-{args.seed}-{step}")
    return rng.sample(train_problems, args.prompts_per_step)


# This rank's prompts: the step's P prompts form M minibatches of consecutive prompts (PPO; M = 1
# for REINFORCE) and each rank takes every world-th prompt of each, so every rank holds the same
# number of prompts of every minibatch (DDP needs every rank in every backward).
C = args.prompts_per_step // M
MINE = [k * C + j for k in range(M) for j in range(d.rank, C, d.world)]


def build_sequences(prompt_ids: list[list[int]], comp: torch.Tensor, group: int):
    """The step's training rows, built once on the device (every forward of the step, the
    reference's, PPO's old pass and each update's, slices them): seq (B, L) = each prompt, then
    its completion, right-padded with 0; pos (B, Tn): the position whose logits predict
    completion token j. prompt_ids: the step's P prompts, each shared by `group` rows."""
    B, Tn = comp.shape
    Lp = torch.tensor([len(p) for p in prompt_ids], device=device).repeat_interleave(group)
    prompts = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(p, dtype=torch.long) for p in prompt_ids], batch_first=True).to(device)
    seq = torch.zeros((B, int(Lp.max()) + Tn), dtype=torch.long, device=device)
    seq[:, :prompts.size(1)] = prompts.repeat_interleave(group, dim=0)
    seq.scatter_(1, Lp[:, None] + torch.arange(Tn, device=device)[None], comp)
    return seq, Lp[:, None] - 1 + torch.arange(Tn, device=device)[None]   # (B, L), (B, Tn)


def forward_completions(model, rows: torch.Tensor):
    """Run model over the step's rows `rows` of prompt + completion and pick, for each completion
    token j, the logits (and value) of the position that predicts it: (b, Tn, V), (b, Tn)/None."""
    # the LM head runs at these Tn positions only: the prompt's (B, Lp, V) logits are never made
    with autocast(device, dtype):
        return model(SEQ[rows], logits_at=POS[rows])


def global_mean(x_sum: torch.Tensor, n_global: torch.Tensor):
    """A rank's share of a token mean over the global batch: (local sum) / (global count) x world.
    DDP divides the summed gradients by world, leaving exactly the global mean's gradient."""
    return x_sum / n_global.clamp(min=1) * d.world


def log(name: str, rec: dict):
    if d.main:
        append_jsonl(os.path.join(args.out_dir, name), rec)
        if name == "metrics.jsonl":
            tracking.log(wandb_run, rec)  # --wandb: the same record (nanorlsp/tracking.py)


def say(msg: str):
    if d.main:
        tqdm.write(msg)


def evaluate(step: int) -> dict:
    # greedy replies to this rank's share of the problems, gathered back in order on every rank
    refresh_rollout_copy()
    _, mine = task_accuracy(roll, tok, task, eval_problems[d.rank::d.world],
                            args.max_new_tokens, temperature=0.0, batch_size=128)
    replies = dist.gather_shards(mine, d)
    acc = sum(r["correct"] for r in replies) / len(replies)
    return {"val_acc": acc,
            "val_mean_tokens": sum(r["n_tokens"] for r in replies) / len(replies),
            "val_behaviors": frequencies([r["text"] for r in replies], args.task)}


def save(step: int):
    # under FSDP every rank takes part in gathering the full weights and optimizer state
    model_state = dist.full_state(policy, keep=is_lora_key if lora else None)  # LoRA: adapters
    head_state = dist.full_state(value_head) if value_head is not None else None
    optim_state = dist.optimizer_state(train_actor, optimizer, args.fsdp)
    if d.main:
        save_checkpoint(args.out_dir, policy, tok, step, vars(args), optim_state,
                        extra={"value_head": head_state, "task": args.task,
                               "explore_off": explore.latched},
                        model_state=model_state)
    dist.barrier()  # no rank runs ahead of a checkpoint it might need


if d.main:
    reset_logs(args.out_dir, ("metrics.jsonl", "samples.jsonl"),
               start_step if state is not None else None)
try:
    # --wandb: W&B mirrors what the logs get (rank 0 only; nanorlsp/tracking.py)
    wandb_run = (tracking.start(args.wandb, args.out_dir, vars(args), resume=state is not None)
                 if d.main else None)
except UserError as e:
    die(str(e))
if state is None and eval_problems:
    ev = evaluate(0)
    say(f"eval step 0 (the SFT policy): held-out acc {ev['val_acc']:.3f} | mean reply "
          f"{ev['val_mean_tokens']:.0f} tokens | behaviours {ev['val_behaviors']}")
    log("metrics.jsonl", dict(step=0, **ev))

def update(rows: torch.Tensor, sums_fn):
    """One optimizer step on this rank's `rows` (all ranks together): forward / backward in
    --grad_accum micro-batches, each loss a token *sum* over the micro-batch divided by the
    global token count of the update (so micro-batches and ranks add up to one global mean),
    gradients synced on the last micro-batch only, clipped, applied. sums_fn(mb, logits, values)
    -> (loss sum, [kl sum, entropy sum, clip-fraction sum, |logp - rollout logp| sum]). Returns
    (skipped, stats (5,): the global means of loss, kl, entropy, clip fraction, logp_diff, and
    the gradient norm before clipping). A non-finite loss or gradient on any rank skips the whole
    update on every rank."""
    n_glob = dist.all_sum(mask[rows].sum())
    chunks = rows.chunk(args.grad_accum)
    stats = torch.zeros(6, device=device)
    optimizer.zero_grad(set_to_none=True)
    for k, mb in enumerate(chunks):
        with dist.grad_sync(train_actor, k == len(chunks) - 1):
            logits, values = forward_completions(train_actor, mb)
            loss_sum, extra = sums_fn(mb, logits, values)
            loss = global_mean(loss_sum, n_glob)
            if dist.any_rank(not bool(torch.isfinite(loss)), device):
                optimizer.zero_grad(set_to_none=True)
                return True, stats
            loss.backward()
        with torch.no_grad():
            stats[:5] += torch.stack([loss.detach() / d.world] + [x.detach() / n_glob for x in extra])
    gnorm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip or float("inf"))  # 0: off
    gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm   # FSDP: a DTensor
    if dist.any_rank(not bool(torch.isfinite(gnorm)), device):
        optimizer.zero_grad(set_to_none=True)
        return True, stats
    optimizer.step()
    stats[5] = gnorm.detach() / d.world     # the same on every rank; all_sum below restores it
    return False, stats


# -----------------------------------------------------------------------------
# the loop

G = args.n_samples
bad_steps = 0
explore = ExploreSchedule(rcfg, G, bool(state.get("explore_off", False)) if state else False)
pbar = tqdm(range(start_step, args.max_steps), initial=start_step, total=args.max_steps,
            desc="rl", dynamic_ncols=True, disable=None if d.main else True)
step = start_step
try:
    for step in pbar:
        t0 = time.time()
        done = step + 1
        # -- rollouts: this rank's prompts x G samples, log-probs of the sampled tokens ------
        batch = rollout_batch(step)                                        # the global P prompts
        problems = [batch[i] for i in MINE]                                # this rank's
        prompt_ids = [render(p) for p in problems]
        refresh_rollout_copy()
        policy.eval()
        ro = sample(roll, prompt_ids, args.max_new_tokens, temperature=args.temperature,
                    n_samples=G, stop_tokens=tok.stop_tokens, seed=args.seed * 100003 + step,
                    return_logprobs=True, vocab_limit=V,
                    row_keys=[i * G + j for i in MINE for j in range(G)])
        policy.train()
        Tn = int(ro.lengths.max())
        comp, mask, roll_logp = ro.tokens[:, :Tn], ro.mask[:, :Tn], ro.logprobs[:, :Tn]
        SEQ, POS = build_sequences(prompt_ids, comp, G)   # (B, L), (B, Tn): one build per step
        t_gen = time.time() - t0

        # -- score: verifier + exploration + repetition ---------------------------------
        t1 = time.time()
        texts, correct, has_ans, reason = [], [], [], []
        for i, toks in enumerate(ro.completions()):
            text = tok.decode(toks[:-1] if ro.finish[i] == "stop" else toks)
            prob = problems[i // G]
            texts.append(text)
            correct.append(bool(task.check(text, prob)))
            # one extraction for the checker, the no-answer test and L: the reasoning is the
            # text before the answer the checker read (a right answer always has one)
            start = task.answer_start(text)
            has_ans.append(correct[-1] or start is not None)
            reason.append(tok.encode(text[:start] if start is not None else text))
        n_right, n_rows = dist.all_sum(torch.tensor([float(sum(correct)), float(len(correct))]))
        acc = (n_right / n_rows).item()                                    # the global batch's
        coef, row_coef, easy = explore.at(step, acc, correct)    # schedules: nanorlsp/economy.py
        parts = score(reason, correct, has_ans, rcfg, row_coef, pieces=PIECES, group_size=G,
                      easy=easy)
        rewards = parts["total"].to(device)
        t_score = time.time() - t1
        # a non-finite reward or loss (on any rank) skips the update on every rank (logged);
        # several in a row stop the run
        skipped = dist.any_rank(not bool(torch.isfinite(rewards).all()), device)

        # -- update ----------------------------------------------------------------------
        t2 = time.time()

        def logps_of(model, want_values=False):
            """Log-probs (B, Tn) of the sampled tokens under `model` (and its values), no grad,
            in --grad_accum chunks like the update: only (B, Tn) is kept, never (B, Tn, V)."""
            lps, vals = [], []
            with torch.no_grad():
                for mb in torch.arange(len(comp)).chunk(args.grad_accum):
                    lg, v = forward_completions(model, mb)
                    lps.append(token_logprobs(lg / args.temperature, comp[mb], V))
                    vals.append(v)
            return torch.cat(lps), (torch.cat(vals) * mask if want_values else None)

        if lora:
            with lora_disabled(actor):         # the base alone is the frozen reference
                ref_logp, _ = logps_of(actor)
        else:
            ref_logp, _ = logps_of(ref_actor)
        # token-level sums per rank -> global means
        sums = torch.zeros(6, device=device)      # loss, kl, ent, clip, logp_diff, grad norm
        n_updates = 0
        if skipped:
            pass
        elif args.algo == "reinforce":
            adv = group_advantages(rewards, G, args.baseline, args.std_norm)  # groups stay on a rank

            def reinforce_sums(mb, logits, values):
                """The loss and stats of rows mb as token sums (x token count of the means)."""
                m = mask[mb]
                logp, ent = token_logprobs_and_entropy(logits / args.temperature, comp[mb], m, V)
                # the training forward before the update vs the sampler's log-probs
                diff = ((logp.detach() - roll_logp[mb]).abs() * m).sum()
                w = truncated_is_weights(logp, roll_logp[mb], m, args.tis_cap) if args.tis_cap else None
                kl = kl_penalty(logp, ref_logp[mb], args.kl_estimator, m)
                n = m.sum()
                loss = (reinforce_loss(logp, adv[mb], m, w) + args.kl_coef * masked_mean(kl, m)) * n
                return loss, [kl.detach().sum(), ent,
                              torch.zeros((), device=device), diff]

            skipped, sums = update(torch.arange(len(comp)), reinforce_sums)
            n_updates = 0 if skipped else 1
        else:
            # PPO's old log-probs and values from the training forward (as OpenRLHF and veRL
            # recompute them), not the sampler's: the ratio is exactly 1 before the first update
            # even when rollouts come from a bf16 / KV-cached copy
            old_logp, old_values = logps_of(actor, want_values=True)
            with torch.no_grad():
                logp_diff_sum = ((old_logp - roll_logp).abs() * mask).sum()
                # --tis_cap: min(pi_old / pi_rollout, cap) per token, fixed for the step's
                # epochs, on the clipped objective's per-token loss (veRL, TRL)
                tis = (truncated_is_weights(old_logp, roll_logp, mask, args.tis_cap)
                       if args.tis_cap else None)
                # per-token reward: the KL penalty on every token, the sequence reward on its last
                tok_rew = -args.kl_coef * kl_value(old_logp, ref_logp, mask)
                last = (ro.lengths - 1).clamp(min=0).to(device)
                tok_rew[torch.arange(len(last)), last] += rewards
                adv, returns = gae(tok_rew, old_values, mask, args.gamma, args.gae_lambda)
                # whiten the advantages over the global batch's tokens (OpenRLHF does the same)
                sm = dist.all_sum(torch.stack([(adv * mask).sum(), mask.sum()]))
                mu = sm[0] / sm[1]
                var = dist.all_sum(((adv - mu) ** 2 * mask).sum()) / sm[1]
                adv = (adv - mu) / (var.sqrt() + 1e-6) * mask

            def ppo_sums(mb, logits, values):
                m = mask[mb]
                logp, ent = token_logprobs_and_entropy(logits / args.temperature, comp[mb], m, V)
                pl, cf = ppo_policy_loss(logp, old_logp[mb], adv[mb], m, args.clip,
                                         None if tis is None else tis[mb])
                vl = value_loss(values, old_values[mb], returns[mb], m, args.value_clip)
                n = m.sum()
                return (pl + args.vf_coef * vl) * n, [
                    kl_penalty(logp.detach(), ref_logp[mb], "k3", m).sum(), ent, cf * n,
                    torch.zeros((), device=device)]

            # minibatch k = this rank's rows of prompts k*C .. (k+1)*C - 1 (see MINE)
            rows_per_mb = len(comp) // M
            for _ in range(args.ppo_epochs):
                for k in range(M):
                    skipped, mb_sums = update(torch.arange(k * rows_per_mb, (k + 1) * rows_per_mb),
                                              ppo_sums)
                    if skipped:
                        break  # the minibatches already applied stay applied
                    sums += mb_sums
                    n_updates += 1
                if skipped:
                    break
            sums /= max(n_updates, 1)
            # over the whole step's tokens (this rank's share of the global mean)
            sums[4] = logp_diff_sum / dist.all_sum(mask.sum())
        loss_v, kl_v, ent_v, clip_v, diff_v, gnorm_v = dist.all_sum(sums).tolist()
        stats = {"kl": kl_v, "entropy": ent_v, "clip_frac": clip_v, "loss": loss_v,
                 "logp_diff": diff_v, "grad_norm": gnorm_v, "updates": n_updates}
        t_train = time.time() - t2
        # PPO: the minibatch updates before a non-finite one stay applied, the step is partial
        if skipped:
            bad_steps += 1
            if not n_updates:
                log("metrics.jsonl", dict(step=done, skipped="non-finite reward, loss or gradient"))
            say(f"step {done}: non-finite reward, loss or gradient, " + (
                f"partially applied ({n_updates} of {args.ppo_epochs * M} minibatch updates)"
                if n_updates else "update skipped") + f" ({bad_steps} in a row)")
            if bad_steps >= args.max_bad_steps:
                die(f"{bad_steps} non-finite steps in a row (last at step {done}); the last "
                    f"checkpoint in {args.out_dir} is intact")
        else:
            bad_steps = 0
        if n_updates:
            # -- log: every rank's rows, gathered in the global order -----------------------
            rows = [dict(i=MINE[i // G] * G + i % G, text=texts[i], correct=correct[i], len=int(n),
                         finish=ro.finish[i], has_answer=has_ans[i],
                         easy=bool(easy is not None and easy[i]),
                         **{k: float(parts[k][i]) for k in
                            ("total", "outcome", "explore", "repetition", "economy")})
                    for i, n in enumerate(ro.lengths.tolist())]
            rows = sorted(dist.gather_shards(rows, d), key=lambda r: r["i"])
            lens = torch.tensor([float(r["len"]) for r in rows])
            mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
            totals = torch.tensor([r["total"] for r in rows]).view(-1, G)          # (P, G)
            rec = dict(step=done, reward=mean("total"), outcome=mean("outcome"),
                       explore=mean("explore"), repetition=mean("repetition"),
                       economy=mean("economy"), explore_coef=coef,
                       acc=acc, len_mean=lens.mean().item(),
                       **{f"len_p{q}": lens.quantile(q / 100).item() for q in (10, 50, 90)},
                       truncated=sum(r["finish"] == "length" for r in rows) / len(rows),
                       # diagnostics for a reward that does not move (README: "When the reward
                       # does not move"): groups with no learning signal, replies with no answer
                       flat_groups=(totals == totals[:, :1]).all(1).float().mean().item(),
                       no_answer=1.0 - mean("has_answer"),
                       behaviors=frequencies([r["text"] for r in rows], args.task), **stats,
                       tok_per_s=float(lens.sum()) / max(t_gen, 1e-9),
                       t_gen=t_gen, t_score=t_score, t_train=t_train,
                       # this rank's training rows (B, L) and completion positions Tn: the
                       # shape bench.py times the bare update at
                       train_shape=[*SEQ.shape, comp.shape[1]])
            if rcfg.schedule == "adaptive":      # the share of rows whose length was charged
                rec["easy_frac"] = mean("easy")
            if skipped:                            # "updates" says how many were applied
                rec["partial"] = "non-finite loss or gradient in a later minibatch"
            log("metrics.jsonl", rec)
            transcripts = [dict(step=done, prompt=batch[r["i"] // G]["prompt"],
                                response=r["text"], correct=r["correct"], reward=r["total"])
                           for r in rows[:args.log_samples]]
            for tr in transcripts:
                log("samples.jsonl", tr)
            if d.main:
                tracking.log_samples(wandb_run, done, transcripts)  # --wandb: a table per step
            say(f"step {done:4d} | reward {rec['reward']:+.3f} (out {rec['outcome']:+.3f} "
                f"exp {rec['explore']:+.3f} rep {rec['repetition']:+.3f} eco "
                f"{rec['economy']:+.3f}) | acc {acc:.3f} | "
                f"len {rec['len_mean']:.0f} | flat {rec['flat_groups']:.2f} | no-ans "
                f"{rec['no_answer']:.2f} | trunc {rec['truncated']:.2f} | kl {stats['kl']:.4f} | "
                f"ent {stats['entropy']:.3f} | clip {stats['clip_frac']:.3f} | gnorm "
                f"{stats['grad_norm']:.2f} | dlogp {stats['logp_diff']:.1e} | "
                f"{rec['tok_per_s']:.0f} tok/s | gen {t_gen:.1f}s score {t_score:.2f}s "
                f"train {t_train:.1f}s")

        # evaluate and save on schedule, and always at the end: a skipped final step included
        # (the run's last line says where the checkpoint is)
        if (done % args.eval_interval == 0 and n_updates) or done == args.max_steps:
            if eval_problems:
                ev = evaluate(done)
                say(f"eval step {done}: held-out acc {ev['val_acc']:.3f} | mean reply "
                    f"{ev['val_mean_tokens']:.0f} tokens | behaviours {ev['val_behaviors']}")
                log("metrics.jsonl", dict(step=done, **ev))
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
del train_actor, actor, optimizer
gc.collect()
dist.shutdown()
