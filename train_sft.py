"""
Stage 1 of RLSP: supervised fine-tuning on demonstrations of the reasoning process.

    python train_sft.py                      # tiny model on `arith`, a few minutes on a laptop CPU
    python train_sft.py --task countdown --out_dir out/sft_countdown
    python train_sft.py --resume             # continue out/sft from its last checkpoint

Reads top to bottom: arguments, setup, data, model and optimizer, loop (log / eval / save), done.
The loss (nanorlsp/sft.py) is next-token cross-entropy on the assistant's tokens only. AdamW with
weight decay on matrices only, linear warm-up then cosine decay, gradient clipping, gradient
accumulation. Every --eval_interval steps: held-out loss on test-split demonstrations, greedy
accuracy on held-out problems (exact checker), and an atomic checkpoint that --resume continues
bit for bit (same data order, optimizer state and step).

The model, LoRA (--lora_rank), DDP / FSDP (torchrun) and --resume are set up by one call
(nanorlsp/sft.py's setup_model); how LoRA and torchrun behave: docs/sft.md.
"""
import gc
import math
import os
import sys
import time

import torch
from tqdm import tqdm

from data import get_task
from data.common import check_styles, parse_styles
from nanorlsp import dist
from nanorlsp.tooling import tracking
from nanorlsp.checkpoint import CheckpointError, load_model, open_run, save_checkpoint
from nanorlsp.common import (ArgParser, UserError, append_jsonl, autocast, comma_list, die,
                             finite_float, float_range, nonneg_int, positive_int, reset_logs,
                             resolve_dtype)
from nanorlsp.evaluation import breakdown, task_accuracy
from nanorlsp.model import LORA_TARGETS, ModelConfig, is_lora_key
from nanorlsp.sft import collate, eval_copy, pack, render_examples, setup_model, sft_loss_sum
from nanorlsp.tokenizer import build_tiny_tokenizer, load_tokenizer

# -----------------------------------------------------------------------------
# arguments

ap = ArgParser(description="RLSP stage 1: SFT on reasoning demonstrations.")
# core
ap.add_argument("--task", default="arith",
                help="synthetic: arith | countdown | countdown_small; real: gsm8k | math "
                     "(../shared/data files)")
ap.add_argument("--data", default=None, help="a real task's train problems (JSONL) instead")
ap.add_argument("--init_from", default="scratch",
                help="'scratch' (a new tiny model) or a checkpoint directory to fine-tune")
ap.add_argument("--max_steps", type=positive_int, default=2500, help="optimizer steps")
ap.add_argument("--seed", type=int, default=1337)
# data
ap.add_argument("--n_train", type=positive_int, default=40000, help="SFT demonstrations")
ap.add_argument("--n_val", type=positive_int, default=500, help="held-out demonstrations (loss)")
ap.add_argument("--styles", default=None, metavar="S[=W],...",
                help="demonstrate only these trace styles, at their default shares or weights W "
                     "(e.g. arith: direct,steps; countdown: direct,path=0.8): SFT without "
                     "verification or backtracking traces")
ap.add_argument("--n_merges", type=nonneg_int, default=256, help="BPE merges for the tiny tokenizer")
ap.add_argument("--seq_len", type=nonneg_int, default=0,
                help="packed row length (0: the longest demonstration, rounded up to 64)")
ap.add_argument("--drop_long", action="store_true",
                help="with --seq_len: drop the demonstrations that do not fit (default: refuse)")
# model (ignored with --init_from a checkpoint)
ap.add_argument("--n_layer", type=positive_int, default=2)
ap.add_argument("--n_embd", type=positive_int, default=128)
ap.add_argument("--n_head", type=positive_int, default=4)
ap.add_argument("--n_kv_head", type=positive_int, default=4)
# optimization
ap.add_argument("--batch_size", type=positive_int, default=8,
                help="packed rows per micro-batch (global: split across torchrun ranks)")
ap.add_argument("--grad_accum", type=positive_int, default=1, help="micro-batches per step")
ap.add_argument("--lr", type=float_range(0, lo_open=True), default=1e-3)
ap.add_argument("--min_lr_frac", type=float_range(0, 1), default=0.1,
                help="final lr as a fraction of --lr")
ap.add_argument("--warmup_steps", type=nonneg_int, default=50)
ap.add_argument("--decay_steps", type=nonneg_int, default=0,
                help="the cosine decay's horizon, the step where the lr reaches --lr x "
                     "--min_lr_frac (0: the run's first --max_steps). Saved with the run: --resume "
                     "with a larger --max_steps goes on at the final lr, it does not move it")
ap.add_argument("--weight_decay", type=float_range(0), default=0.1)
ap.add_argument("--grad_clip", type=float_range(0), default=1.0, help="max grad norm (0: off)")
# scale: devices, memory, LoRA (nanorlsp/sft.py's setup_model)
ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                help="autocast compute dtype (weights stay float32)")
ap.add_argument("--compile", action="store_true", help="torch.compile the model")
ap.add_argument("--fsdp", action="store_true",
                help="torchrun: shard weights, gradients and optimizer state (FSDP2) instead of DDP")
ap.add_argument("--act_ckpt", action="store_true", help="activation checkpointing per block")
ap.add_argument("--lora_rank", type=nonneg_int, default=0,
                help="LoRA: freeze the --init_from model and train rank-R adapters (0: full "
                     "fine-tuning)")
ap.add_argument("--lora_alpha", type=finite_float, default=32.0,
                help="LoRA: the adapters' output is scaled by alpha / rank")
ap.add_argument("--lora_targets", type=comma_list(LORA_TARGETS), default=LORA_TARGETS,
                help="LoRA: the projections that get adapters, comma-separated "
                     f"(default all: {','.join(LORA_TARGETS)})")
# run management: output, logging, evaluation
ap.add_argument("--out_dir", default="out/sft", help="checkpoint, metrics.jsonl, tokenizer")
ap.add_argument("--resume", action="store_true", help="continue the run in --out_dir")
ap.add_argument("--overwrite", action="store_true",
                help="start over even if --out_dir already holds a checkpoint")
ap.add_argument("--log_interval", type=positive_int, default=25)
ap.add_argument("--eval_interval", type=positive_int, default=500, help="eval + checkpoint")
ap.add_argument("--eval_problems", type=nonneg_int, default=500, help="held-out problems (0: off)")
ap.add_argument("--eval_offset", type=nonneg_int, default=0,
                help="skip this many held-out problems first: eval.py scores the first --limit of "
                     "the same stream, so an offset of 500 keeps checkpoint selection off them")
ap.add_argument("--max_new_tokens", type=positive_int, default=320, help="generation cap in eval")
ap.add_argument("--wandb", default=None, metavar="PROJECT",
                help="also log metrics.jsonl and the transcripts to this Weights & Biases project "
                     "(pip install wandb; WANDB_MODE=offline: no network, files in OUT_DIR/wandb)")
args = ap.parse_args()

# -----------------------------------------------------------------------------
# the output directory: never overwrite a run by accident; resume only what exists

# the run's own hyperparameters on --resume, so the continuation equals an uninterrupted run;
# only the step budget and the device may change. First, before anything reads args (the task,
# the device and dtype, the FSDP check were built from the defaults before, so a resumed
# countdown run trained on arith)
try:
    state = open_run(args, sys.argv[1:], keep={"max_steps", "device", "wandb"})
except UserError as e:
    die(str(e))
if not args.decay_steps:
    # the horizon of the run's first start (a checkpoint saved before the flag: its --max_steps)
    args.decay_steps = state["args"]["max_steps"] if state is not None else args.max_steps

try:
    task = get_task(args.task, args.data)
    styles = check_styles(task, parse_styles(args.styles)) if args.styles else None
    d = dist.setup(args.device, args.fsdp)
    device = d.device
    dtype = resolve_dtype(args.dtype, device)
except (ValueError, UserError) as e:
    die(str(e))
for note in getattr(task, "NOTES", ()) if d.main else ():   # a real set's skipped rows
    print(f"note: {note}")
if args.batch_size % d.world:
    die(f"--batch_size {args.batch_size} must be a multiple of the {d.world} ranks")
if args.lora_rank and state is None and args.init_from == "scratch":
    die("--lora_rank adapts a trained model: give --init_from (a from-scratch model has no "
        "weights worth freezing)")
if args.lora_rank and state is None and os.path.realpath(args.init_from) == os.path.realpath(
        args.out_dir):
    die("--lora_rank with --out_dir = --init_from would overwrite the base the adapters need")
if state is None and args.init_from == "scratch":
    # the model flags' shapes checked before any data is built or written (the vocabulary
    # is not known yet: 64 stands in); ModelConfig's own checks, as one line
    try:
        ModelConfig(vocab_size=64, n_layer=args.n_layer, n_embd=args.n_embd,
                    n_head=args.n_head, n_kv_head=args.n_kv_head)
    except ValueError as e:
        die(f"--n_embd {args.n_embd} --n_head {args.n_head} --n_kv_head {args.n_kv_head}: {e}")
# LoRA holds the frozen base in the compute dtype (only the adapters need float32 masters)
base_dtype = dtype if args.lora_rank else torch.float32

torch.manual_seed(args.seed)
if d.main:
    os.makedirs(args.out_dir, exist_ok=True)

# -----------------------------------------------------------------------------
# data: demonstrations -> tokenizer -> (ids, mask) -> packed rows

t0 = time.time()
try:
    train_rows = task.make_sft_examples(args.n_train, seed=args.seed, styles=styles)
    val_rows = task.make_sft_examples(args.n_val, seed=0, split="test", styles=styles)
    eval_problems = (task.make_problems("test", args.eval_offset + args.eval_problems,
                                        seed=0)[args.eval_offset:] if args.eval_problems else [])
except ValueError as e:  # a real set's DataError: one line naming the file
    die(str(e))

init_model = None   # the loaded --init_from (its tokenizer is the run's)
if state is not None:
    tok = load_tokenizer(args.out_dir)
elif args.init_from != "scratch":
    try:
        init_model, tok = load_model(args.init_from, device=device, dtype=base_dtype)
    except CheckpointError as e:
        die(str(e))
    if tok is None:
        die(f"--init_from {args.init_from} holds weights but no tokenizer files: copy the "
            "original model's tokenizer (tokenizer.json, vocab.json + merges.txt or "
            "tokenizer.model) into it")
else:
    # the tiny tokenizer's merges are learned from the training demonstrations only
    tok = build_tiny_tokenizer((r["prompt"] + "\n" + r["response"] for r in train_rows),
                               n_merges=args.n_merges)
train_ex = render_examples(tok, train_rows)
val_ex = render_examples(tok, val_rows)
say = print if d.main else (lambda *a, **k: None)
if args.drop_long and args.seq_len:
    # a long-tailed task (countdown's 160-node searches reach ~2.7k tokens, p90 ~700) packed into
    # rows of its longest example spends most compute on attention over rows of a few long
    # searches; dropping the tail trades those demonstrations for rows a few times shorter
    fits = lambda ex: [x for x in ex if len(x[0]) <= args.seq_len + 1]
    n_before = len(train_ex)
    train_ex, val_ex = fits(train_ex), fits(val_ex)
    if not train_ex or not val_ex:
        die(f"--seq_len {args.seq_len} --drop_long leaves no demonstrations")
    say(f"data: --drop_long dropped {n_before - len(train_ex)} of {n_before} demonstrations "
        f"longer than {args.seq_len + 1} tokens")
n_tok = sum(len(x) for x, _ in train_ex)
longest = max(len(x) for x, _ in train_ex + val_ex)
if args.seq_len == 0:
    args.seq_len = 64 * math.ceil((longest - 1) / 64)  # rows hold seq_len + 1 tokens
elif longest > args.seq_len + 1:
    die(f"--seq_len {args.seq_len} is shorter than the longest demonstration ({longest} tokens); "
        f"--drop_long drops what does not fit")
say(f"data: {len(train_ex)} demonstrations ({n_tok / len(train_ex):.0f} tokens avg, longest "
      f"{longest}), rows of {args.seq_len}, vocab {tok.n_vocab}, {time.time() - t0:.1f}s")


def row_stream(examples, seq_len, seed, skip=0):
    """Packed rows forever, one shuffled epoch after another; `skip` rows are fast-forwarded
    (resume), so the data order is a pure function of (seed, position)."""
    epoch, i = 0, 0
    while True:
        rows = pack(examples, seq_len, seed, epoch)
        for r in rows:
            if i >= skip:
                yield r
            i += 1
        epoch += 1


# -----------------------------------------------------------------------------
# model and optimizer: one call (LoRA, DDP / FSDP, --resume: nanorlsp/sft.py)

try:
    model, net, optimizer, start_step = setup_model(args, d, state, tok, init_model, dtype, say)
except (CheckpointError, UserError, ValueError) as e:
    die(str(e))
forward = torch.compile(net) if args.compile else net


def lr_at(step: int) -> float:
    """Linear warm-up to --lr, then cosine decay to --lr * --min_lr_frac at --decay_steps."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    frac = (step - args.warmup_steps) / max(1, args.decay_steps - args.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * cos)


@torch.no_grad()
def val_loss(model) -> float:
    model.eval()
    tot, cnt = 0.0, 0.0
    rows = pack(val_ex, args.seq_len, seed=0, epoch=0)[d.rank::d.world]   # this rank's share
    for i in range(0, len(rows), args.batch_size):
        idx, tgt, m, pos, am = (t.to(device) for t in collate(val_ex, rows[i:i + args.batch_size],
                                                              args.seq_len))
        with autocast(device, dtype):
            logits = model(idx, positions=pos, attn_mask=am)
        tot += sft_loss_sum(logits, tgt, m).item()
        cnt += m.sum().item()
    model.train()
    tot, cnt = dist.all_sum(torch.tensor([tot, cnt], dtype=torch.float64)).tolist()
    return tot / max(cnt, 1)


def evaluate(step: int) -> dict:
    em = eval_copy(model, args.fsdp, device)
    out = {"val_loss": val_loss(em)}
    if eval_problems:
        _, mine = task_accuracy(em, tok, task, eval_problems[d.rank::d.world],
                                args.max_new_tokens, temperature=0.0, batch_size=100)
        replies = dist.gather_shards(mine, d)
        out["val_acc"] = sum(r["correct"] for r in replies) / len(replies)
        out["val_mean_tokens"] = sum(r["n_tokens"] for r in replies) / len(replies)
        out.update({f"val_{k}": v for k, v in breakdown(task, eval_problems, replies).items()})
    return out


def log(rec: dict):
    if d.main:
        append_jsonl(os.path.join(args.out_dir, "metrics.jsonl"), rec)
        tracking.log(wandb_run, rec)      # --wandb: the same record (nanorlsp/tooling/tracking.py)


def save(step: int):
    # FSDP: every rank helps gather; a LoRA checkpoint gathers (and keeps) the adapters only
    model_state = dist.full_state(model, keep=is_lora_key if model.lora is not None else None)
    optim_state = dist.optimizer_state(net, optimizer, args.fsdp)
    if d.main:
        save_checkpoint(args.out_dir, model, tok, step, vars(args), optim_state,
                        extra={"rng": {"torch": torch.get_rng_state()}, "task": args.task},
                        model_state=model_state)
    dist.barrier()


# on resume, drop metrics logged after the checkpoint (they belong to the lost tail of the run)
if d.main:
    reset_logs(args.out_dir, ("metrics.jsonl",), start_step if state is not None else None)
try:
    # --wandb: W&B mirrors what the logs get (rank 0 only; nanorlsp/tooling/tracking.py)
    wandb_run = (tracking.start(args.wandb, args.out_dir, vars(args), resume=state is not None)
                 if d.main else None)
except UserError as e:
    die(str(e))
write = tqdm.write if d.main else (lambda *a, **k: None)

# -----------------------------------------------------------------------------
# training loop

rows_per_step = args.batch_size * args.grad_accum
stream = row_stream(train_ex, args.seq_len, args.seed, skip=start_step * rows_per_step)
pbar = tqdm(range(start_step, args.max_steps), initial=start_step, total=args.max_steps,
            desc="sft", dynamic_ncols=True, disable=None if d.main else True)
t_run, t_log, tokens_since = time.time(), time.time(), 0
loss_acc, n_acc = 0.0, 0
step = start_step
try:
    for step in pbar:
        lr = lr_at(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        # every rank draws the same global micro-batches and keeps every world-th row
        rows = [[next(stream) for _ in range(args.batch_size)] for _ in range(args.grad_accum)]
        # collate builds each row on its own, so a rank's rows of the global batch are a slice
        micro = [collate(train_ex, r, args.seq_len) for r in rows]
        # normalise by the assistant tokens of the whole global step, so accumulation and ranks
        # add up to one big batch (DDP then averages over ranks: hence x world)
        n_targets = sum(mb[2].sum() for mb in micro).clamp(min=1)
        step_loss = 0.0
        for k, mb in enumerate(micro):
            idx, tgt, m, pos, am = (t[d.rank::d.world].to(device) for t in mb)
            # DDP / FSDP reduce gradients on the last micro-batch's backward only
            with dist.grad_sync(net, k == len(micro) - 1):
                with autocast(device, dtype):
                    logits = forward(idx, positions=pos, attn_mask=am)
                loss = sft_loss_sum(logits, tgt, m) / n_targets * d.world
                loss.backward()
            step_loss += loss.item() / d.world
            tokens_since += idx.numel() * d.world
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                               args.grad_clip if args.grad_clip > 0 else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_loss = dist.all_sum(torch.tensor([step_loss])).item()
        loss_acc, n_acc = loss_acc + step_loss, n_acc + 1

        done = step + 1
        if done % args.log_interval == 0 or done == args.max_steps:
            dt = time.time() - t_log
            rec = dict(step=done, loss=loss_acc / n_acc, lr=lr, grad_norm=float(gnorm),
                       tok_per_s=tokens_since / dt, elapsed_s=time.time() - t_run)
            write(f"step {done:5d} | loss {rec['loss']:.4f} | lr {lr:.2e} | "
                       f"gnorm {rec['grad_norm']:.2f} | {rec['tok_per_s']:.0f} tok/s")
            log(rec)
            t_log, tokens_since, loss_acc, n_acc = time.time(), 0, 0.0, 0
        if done % args.eval_interval == 0 or done == args.max_steps:
            ev = evaluate(done)
            msg = f"eval step {done}: val_loss {ev['val_loss']:.4f}"
            if "val_acc" in ev:
                msg += f" | held-out acc {ev['val_acc']:.3f} | mean reply {ev['val_mean_tokens']:.0f} tokens"
            write(msg)
            if "val_style" in ev:
                write("  replies by style (share, accuracy): " + ", ".join(
                    f"{s} {v['frac']:.2f} {v['acc']:.2f}" for s, v in ev["val_style"].items())
                    + " | accuracy by level: " + ", ".join(
                    f"L{k} {v:.2f}" for k, v in ev["val_level"].items()))
            log(dict(step=done, **ev))
            save(done)
            t_log = time.time()  # eval time is not training throughput
except KeyboardInterrupt:
    pbar.close()
    die(f"interrupted at step {step}; the last checkpoint in {args.out_dir} is intact "
        "(continue with --resume)", code=130)
pbar.close()
say(f"done: {args.max_steps} steps in {time.time() - t_run:.0f}s; checkpoint in {args.out_dir}")
tracking.finish(wandb_run)
# DDP's reducer holds the process group: free it first, so the group is torn down here, in order
# (see train_rl.py)
del net, forward, optimizer
gc.collect()
dist.shutdown()
