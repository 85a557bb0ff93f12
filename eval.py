"""
Evaluate a checkpoint: pass@1, pass@k, maj@k, accuracy by level, response lengths, truncation,
and the frequency of backtracking / verification / exploring alternatives.

    python eval.py                                   # out/rl (else out/sft) on arith's test split
    python eval.py --init_from out/sft --n_samples 8 --temperature 1.0 --out sft.json
    python eval.py --init_from out/sft --task gsm8k --limit 200
    python eval.py --init_from out/sft --data my_problems.jsonl

Tasks: `arith` and `countdown` (their held-out split, checked exactly) and real sets from JSONL
(`gsm8k`, `math500`, `aime24` from ../shared/data, or --data with `problem`/`question` and
`answer`, checked by nanorlsp.verifier.grade); prompts go through the model's chat format.
--out writes the figures as one JSON object, and the transcripts as JSONL beside it.
pass@k: Chen et al. 2021 (Codex, eq. 1), 1 - C(n-c, k) / C(n, k) from n samples with c correct.
maj@k (self-consistency, Wang et al. 2022) votes with the answer the checker reads: a reply it
calls unanswered casts no vote; ties go to the answer seen first. More: docs/evaluation.md.
"""
import json
import math
import os
import statistics
import tempfile
import time
from collections import defaultdict


from data import TASK_NAMES, get_task
from data.real import REAL_TASKS, DataError, load_problems
from nanorlsp.behaviors import frequencies
from nanorlsp.checkpoint import CheckpointError, has_checkpoint, load_model, model_file_kind
from nanorlsp.common import (ArgParser, UserError, atomic_write, die, finite_float, nonneg_int,
                             positive_int,
                             resolve_device, resolve_dtype)
from nanorlsp.evaluation import (breakdown, checked_answer, majority_vote, pass_at_k,
                                 prompt_lengths, respond, user_prompt)
from nanorlsp.verifier import grade, is_equiv

# -----------------------------------------------------------------------------
# arguments

ap = ArgParser(description="Evaluate a nanorlsp checkpoint on a synthetic or real math task.")
ap.add_argument("--init_from", default="auto",
                help="checkpoint dir (default: out/rl, else out/sft)")
ap.add_argument("--task", default="arith", choices=list(TASK_NAMES) + list(REAL_TASKS))
ap.add_argument("--data", default=None, help="a JSONL file of problem/question + answer")
ap.add_argument("--limit", type=nonneg_int, default=None,
                help="first N problems (synthetic tasks: N test problems; default 500)")
ap.add_argument("--offset", type=nonneg_int, default=0,
                help="skip the first N problems (e.g. pick a recipe on problems past the test set)")
ap.add_argument("--n_samples", type=positive_int, default=1, help="samples per problem")
ap.add_argument("--temperature", type=finite_float, default=0.0, help="0 = greedy")
ap.add_argument("--top_p", type=finite_float, default=1.0)
ap.add_argument("--max_new_tokens", type=positive_int, default=None,
                help="generation cap (default: arith 320, countdown and real sets 1024)")
ap.add_argument("--k", default=None,
                help="comma-separated k's for pass@k / maj@k (default: powers of 2 up to n_samples)")
ap.add_argument("--batch_size", type=positive_int, default=128, help="sequences per sampler call")
ap.add_argument("--out", default=None, help="write the results JSON here")
ap.add_argument("--transcripts", default=None,
                help="JSONL of every response (default: beside --out, .transcripts.jsonl)")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
args = ap.parse_args()

if args.temperature < 0:
    die("--temperature must be >= 0")
if not 0 < args.top_p <= 1:
    die("--top_p must be in (0, 1]")
try:
    ks = sorted({int(k) for k in args.k.split(",")}) if args.k else \
        [2 ** i for i in range(int(math.log2(args.n_samples)) + 1)]
except ValueError:
    die(f"--k must be comma-separated integers, got {args.k!r}")
if any(k < 1 or k > args.n_samples for k in ks):
    die(f"every k in --k must be between 1 and --n_samples ({args.n_samples})")
if args.n_samples > 1 and args.temperature == 0:
    print("note: at temperature 0 every sample of a problem is the same (greedy)")


def check_output(path: str, flag: str) -> None:
    """Before the evaluation, not after it: `path` is not part of a model (a checkpoint or
    tokenizer written over is lost), and its directory (created if missing) takes a file."""
    kind = model_file_kind(path)
    if kind:
        die(f"{flag} {path} is {kind}: refusing to write results over it")
    if os.path.isdir(path):
        die(f"{flag} {path} is a directory")
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".eval-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        die(f"{flag} {path} cannot be written ({e.strerror or e})")


transcripts = args.transcripts or (os.path.splitext(args.out)[0] + ".transcripts.jsonl"
                                   if args.out else None)
if args.out and transcripts and os.path.abspath(args.out) == os.path.abspath(transcripts):
    die(f"--out and --transcripts are the same file {args.out}")
for flag, path in (("--out", args.out), ("--transcripts", transcripts)):
    if path and args.data and os.path.abspath(path) == os.path.abspath(args.data):
        die(f"{flag} {path} is the --data file: refusing to write results over the problems")
    if path:
        check_output(path, flag)

# -----------------------------------------------------------------------------
# model and problems

init_from = args.init_from
if init_from == "auto":
    init_from = next((d for d in ("out/rl", "out/sft") if has_checkpoint(d)), None)
    if init_from is None:
        die("no checkpoint in out/rl or out/sft: train one (python train_sft.py) or pass --init_from")
try:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tok = load_model(init_from, device=device, dtype=dtype)
except (CheckpointError, UserError) as e:
    die(str(e))
if tok is None:
    die(f"--init_from {init_from} holds weights but no tokenizer files: copy the original "
        "model's tokenizer (tokenizer.json, vocab.json + merges.txt or tokenizer.model) into it")

synthetic = args.task in TASK_NAMES and args.data is None
try:
    if synthetic:
        task = get_task(args.task)
        if args.limit == 0:
            raise DataError("--limit 0: nothing to evaluate")
        problems = task.make_problems("test", args.offset + (args.limit or 500),
                                      seed=0)[args.offset:]
        check = task.check
    else:
        task = None
        problems = load_problems(args.task, path=args.data, limit=args.limit and
                                 args.offset + args.limit)[args.offset:]
        if not problems:
            raise DataError(f"--offset {args.offset}: the set has no problems past it")
        check = lambda text, p: grade(text, p["answer"])  # noqa: E731
except (DataError, RuntimeError) as e:
    die(str(e))
max_new = args.max_new_tokens or (320 if args.task == "arith" and synthetic else 1024)
# a prompt must fit the model's context, with room for the reply: the sampler sizes its KV cache
# to prompt + reply, so a problem of millions of characters asked for hundreds of TB
CTX = model.config.max_seq_len
prompt_lens = prompt_lengths(problems, tok, CTX)
too_long = [i for i, m in enumerate(prompt_lens) if m >= CTX]
if too_long:
    i, more = too_long[0], len(too_long) - 1
    die(f"problem {i + 1} is longer than the model's context (max_seq_len) {CTX} tokens with "
        f"its chat template{f'; {more} more too long' if more else ''}: shorten or drop it")
print(f"eval {init_from} on {args.data or args.task}: {len(problems)} problems x "
      f"{args.n_samples} samples, temperature {args.temperature}, max {max_new} new tokens")

# -----------------------------------------------------------------------------
# generate and grade

t0 = time.time()
replies = respond(model, tok, [user_prompt(p, tok) for p in problems], max_new, args.temperature,
                  n_samples=args.n_samples, batch_size=args.batch_size, seed=args.seed,
                  top_p=args.top_p)
t_gen = time.time() - t0
n = args.n_samples
for j, r in enumerate(replies):
    p = problems[j // n]
    r["correct"] = bool(check(r["text"], p))
    r["answer"] = checked_answer(r["text"], synthetic)   # what check() read; maj@k votes with it


def same_answer(a: str, b: str) -> bool:
    return a.strip() == b.strip() if synthetic else is_equiv(a, b)


groups = [replies[i * n:(i + 1) * n] for i in range(len(problems))]
correct_per_problem = [sum(r["correct"] for r in g) for g in groups]
by_level = defaultdict(list)
for p, g in zip(problems, groups):
    by_level[p.get("level")].extend(r["correct"] for r in g)
lengths = [r["n_tokens"] for r in replies]
results = {
    "task": args.data or args.task,
    "init_from": init_from,
    "n_problems": len(problems),
    **({"offset": args.offset} if args.offset else {}),
    "n_samples": n,
    "temperature": args.temperature,
    "max_new_tokens": max_new,
    "pass@1": sum(r["correct"] for r in replies) / len(replies),
    **{f"pass@{k}": statistics.mean(pass_at_k(n, c, k) for c in correct_per_problem) for k in ks},
    **{f"maj@{k}": statistics.mean(majority_vote([(r["answer"], r["correct"]) for r in g[:k]],
                                                  same_answer) for g in groups) for k in ks},
    "accuracy_by_level": {str(lv): sum(v) / len(v) for lv, v in sorted(by_level.items(),
                                                                       key=lambda kv: str(kv[0]))
                          if lv is not None},
    "mean_response_tokens": statistics.mean(lengths),
    "median_response_tokens": statistics.median(lengths),
    "truncation_rate": sum(r["finish"] == "length" for r in replies) / len(replies),
    "behaviors": frequencies([r["text"] for r in replies], args.task if synthetic else None),
    "gen_seconds": t_gen,
    "gen_tokens_per_s": sum(lengths) / max(t_gen, 1e-9),
}
if synthetic:
    results["styles"] = breakdown(task, problems, replies)["style"]
if synthetic and hasattr(task, "step_error_totals"):
    # countdown: the search's own steps "a op b=c" whose arithmetic is wrong (the verifier reads
    # only the boxed expression; a search through false states is not a search)
    steps, wrong = task.step_error_totals(r["text"] for r in replies)
    results["search_steps"], results["wrong_step_share"] = steps, wrong / max(steps, 1)

# -----------------------------------------------------------------------------
# report

print(" | ".join([f"pass@1 {results['pass@1']:.4f}"] + [
    f"pass@{k} {results[f'pass@{k}']:.4f} maj@{k} {results[f'maj@{k}']:.4f}" for k in ks if k > 1]))
if results["accuracy_by_level"]:
    print("by level: " + ", ".join(f"{lv}: {a:.3f}" for lv, a in results["accuracy_by_level"].items()))
print(f"response tokens: mean {results['mean_response_tokens']:.1f}, median "
      f"{results['median_response_tokens']:.0f}; truncated {results['truncation_rate']:.3f}; "
      f"{results['gen_tokens_per_s']:.0f} tokens/s")
print("behaviours: " + ", ".join(f"{b} {f:.3f}" for b, f in results["behaviors"].items()))
if "search_steps" in results:
    print(f"search steps: {results['search_steps']}, wrong arithmetic "
          f"{100 * results['wrong_step_share']:.1f}%")
if "styles" in results:
    print("styles (share, accuracy): " + ", ".join(
        f"{s} {v['frac']:.2f} {v['acc']:.2f}" for s, v in results["styles"].items()))

if args.out:
    atomic_write(args.out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
if transcripts:
    atomic_write(transcripts, "".join(json.dumps({
        "problem": problems[j // n]["prompt"], "gold": problems[j // n]["answer"],
        "sample": j % n, "response": r["text"], "answer": r["answer"], "correct": r["correct"],
        "n_tokens": r["n_tokens"], "finish": r["finish"]}) + "\n" for j, r in enumerate(replies)))
    print(f"wrote {transcripts}")
