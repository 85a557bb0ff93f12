"""
Talk to a trained model: the model's own chat template, the reply streamed token by token
through the KV-cached sampler.

    python chat.py --init_from out/rl                      # interactive; Ctrl-D / Ctrl-C leaves
    python chat.py --init_from smollm2 --prompt "What is 17 * 23?"          # one question
    python chat.py --init_from out/rl --mark               # + the behaviours and the answer
    echo "What is 3 + 45?" | python chat.py --no_history   # piped: one reply per input line

--init_from takes what load_model takes: a checkpoint dir (default: out/rl, else out/sft), a
Hugging Face model dir, a .gguf file, or "smollm2". The conversation is kept and re-rendered every
turn (the whole chat is the prompt: no cache is carried between turns); when it outgrows the
model's context (model.config.max_seq_len, of which the reply keeps min(--max_new_tokens, half))
the oldest turns are dropped, and a single question that is too long is one error line on stderr
(the chat goes on with the next; with --prompt, the exit). --no_history sends each line alone.
After each reply a line on stderr gives the prompt and reply lengths and the speed; --mark adds
the behaviours nanorlsp.behaviors detects (backtracking, verification, alternatives) and the
answer the verifier extracts (nanorlsp.verifier.extract_answer).
"""
import json
import os
import sys
import time



from nanorlsp.behaviors import MARKERS, SAME_TRACES, detect
from nanorlsp.checkpoint import CheckpointError, load_model
from nanorlsp.common import (ArgParser, UserError, die, finite_float, positive_int,
                             resolve_device, resolve_dtype)
from nanorlsp.sampler import sample
from nanorlsp.verifier import extract_answer

ap = ArgParser(description="Chat with a model: its chat template, replies streamed from the sampler.")
ap.add_argument("--init_from", default="auto",
                help="checkpoint dir, HF dir, .gguf or smollm2 (default: out/rl, else out/sft)")
ap.add_argument("--prompt", default=None, help="ask this one question, print the reply, exit")
ap.add_argument("--system", default=None, help="a system message (formats that have one)")
ap.add_argument("--temperature", type=finite_float, default=0.7, help="0 = greedy")
ap.add_argument("--top_p", type=finite_float, default=0.95)
ap.add_argument("--max_new_tokens", type=positive_int, default=512)
ap.add_argument("--no_history", action="store_true", help="every question alone, no conversation")
ap.add_argument("--mark", action="store_true",
                help="after each reply: the behaviours detected and the extracted answer")
ap.add_argument("--task", default=None,
                help="behaviour markers of a synthetic task (arith | countdown | countdown_small; "
                     "default: from the checkpoint, else natural-text keywords)")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
args = ap.parse_args()
if args.temperature < 0 or not 0 < args.top_p <= 1:
    die("--temperature must be >= 0 and --top_p in (0, 1]")

# -----------------------------------------------------------------------------
# the model

path = args.init_from
if path == "auto":
    path = next((p for p in ("out/rl", "out/sft") if os.path.isdir(p)), None)
    if path is None:
        die("no out/rl or out/sft here: pass --init_from (a checkpoint, HF dir, .gguf or smollm2)")
try:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tok = load_model(path, device=device, dtype=dtype)
except (CheckpointError, UserError) as e:
    die(str(e))
except KeyboardInterrupt:
    sys.exit(130)
if tok is None:
    die(f"{path} has no tokenizer files: chat needs one (load_model(..., tokenizer=PATH))")
if tok.chat_format is None:
    die(f"{path}'s tokenizer has no chat template")


def saved_task(path: str) -> str | None:
    """The task a native run trained on, from its readable config.json; None when there is none
    or it is broken (it is never read back to load the model: chat goes on without it)."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            task = json.load(f)["args"]["task"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return task if isinstance(task, str) else None


task = args.task or (saved_task(path) if os.path.isdir(path) else None)
task = task if SAME_TRACES.get(task, task) in MARKERS else None    # else: natural-text keywords
# the context: a prompt may take what the reply leaves, and the reply at least half of it
CTX = model.config.max_seq_len
budget = CTX - min(args.max_new_tokens, CTX // 2)          # prompt tokens that fit


def prompt_ids(messages: list[dict]) -> list[int]:
    """The rendered chat, oldest turns dropped until it fits the model's context."""
    head = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(head):]
    while True:
        ids = tok.render_prompt(head + turns)
        if len(ids) <= budget or len(turns) <= 1:
            return ids
        turns = turns[2:]                                   # the oldest question and its reply


def reply(ids: list[int]) -> tuple[str, int]:
    """Sample one reply, printing it as it comes. UTF-8 characters may span tokens: text is
    decoded from all the reply's tokens so far and a trailing partial character is held back."""
    out, shown = [], [""]
    stop = set(tok.stop_tokens)

    def on_token(t, tokens, done):
        x = int(tokens[0])
        if x in stop:
            return
        out.append(x)
        text = tok.decode(out)
        if text.endswith("\ufffd"):                         # half a character: wait for the rest
            return
        sys.stdout.write(text[len(shown[0]):])
        sys.stdout.flush()
        shown[0] = text

    r = sample(model, [ids], min(args.max_new_tokens, CTX - len(ids)),
               temperature=args.temperature, top_p=args.top_p,
               stop_tokens=tok.stop_tokens, seed=args.seed, vocab_limit=tok.n_vocab,
               on_token=on_token)
    text = tok.decode(out)
    sys.stdout.write(text[len(shown[0]):] + "\n")
    sys.stdout.flush()
    return text, int(r.lengths[0])


# -----------------------------------------------------------------------------
# the loop

interactive = args.prompt is None and sys.stdin.isatty()
if args.prompt is None and not interactive:
    sys.stdin.reconfigure(errors="replace")   # piped bytes that are not UTF-8 must not end the chat
messages = [{"role": "system", "content": args.system}] if args.system else []
if interactive:
    print(f"chatting with {path} ({model.num_params() / 1e6:.1f}M parameters, "
          f"{tok.chat_format} template); Ctrl-D or Ctrl-C to leave", file=sys.stderr)
try:
    while True:
        if args.prompt is not None:
            line = args.prompt
        elif interactive:
            line = input("you> ")
        else:
            line = sys.stdin.readline()
            if not line:
                break                                       # EOF
        line = line.strip()
        if not line:
            continue
        user = {"role": "user", "content": line}
        convo = ([m for m in messages if m["role"] == "system"] + [user] if args.no_history
                 else messages + [user])
        try:
            ids = prompt_ids(convo)
        except ValueError as e:                             # a role the template does not have
            die(str(e))
        if len(ids) > budget:
            msg = (f"the question is {len(ids)} tokens with its template; this model's context "
                   f"({CTX}) leaves {budget} for it")
            if args.prompt is not None:
                die(msg)
            print(f"error: {msg} (skipped)", file=sys.stderr)    # the next line still gets a reply
            continue
        t0 = time.time()
        text, n = reply(ids)
        dt = time.time() - t0
        info = f"[prompt {len(ids)} tokens | reply {n} tokens | {n / max(dt, 1e-9):.0f} tok/s"
        if args.mark:
            seen = [b for b, on in detect(text, task).items() if on]
            info += f" | behaviours: {', '.join(seen) or 'none'} | answer: {extract_answer(text)!r}"
        print(info + "]", file=sys.stderr)
        if not args.no_history:
            messages += [user, {"role": "assistant", "content": text}]
        if args.prompt is not None:
            break
except (EOFError, KeyboardInterrupt):
    print(file=sys.stderr)                                  # leave on a clean line
sys.exit(0)
