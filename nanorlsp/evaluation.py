"""
Text-level generation and scoring shared by train_sft.py, train_rl.py and eval.py.

    rows = respond(model, tok, ["What is 12 + 30?"], max_new_tokens=64, temperature=0)
    acc, rows = task_accuracy(model, tok, task, problems, max_new_tokens=320)
    breakdown(task, problems, rows) -> {"style": {style: {frac, acc}}, "level": {level: acc}}
"""
import math
from collections import defaultdict

import torch

from nanorlsp.sampler import sample
from nanorlsp.verifier import extract_answer, last_boxed

# The paper's evaluation prompt (and Qwen2.5-Math's): the verifier reads the last \boxed{}.
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def user_prompt(problem: dict, tok) -> str:
    """The user turn for a problem. The tiny model learned its reply format from the SFT traces;
    a real model (any other chat format) is told to box its final answer, once."""
    text = problem["prompt"]
    if tok.chat_format != "tiny" and "\\boxed" not in text:
        text += "\n" + INSTRUCTION
    return text


def render(problem: dict, tok) -> list[int]:
    """A problem's prompt as the model reads it: the chat rendered up to the assistant's turn."""
    return tok.render_prompt([{"role": "user", "content": user_prompt(problem, tok)}])


def prompt_lengths(problems: list[dict], tok, ctx: int) -> list[int]:
    """Each problem's prompt in tokens, chat template included. A text longer than ctx x the
    widest token's bytes cannot fit whatever it tokenizes to: it counts as ctx + 1, untokenized
    (tokenizing a 20M-character problem alone takes minutes)."""
    widest = max(len(tok.decode_bytes([i])) for i in range(tok.n_vocab))
    return [len(render(p, tok)) if len(user_prompt(p, tok)) <= ctx * widest else ctx + 1
            for p in problems]


@torch.no_grad()
def respond(model, tok, prompts: list[str], max_new_tokens: int, temperature: float = 0.0,
            n_samples: int = 1, batch_size: int = 64, seed: int | None = None,
            top_p: float = 1.0) -> list[dict]:
    """Chat-format each prompt as a user turn and sample n_samples replies, batched through the
    KV-cached sampler. Returns one dict per reply, prompt-major: text (decoded, stop token
    dropped), n_tokens (generated, stop token included), finish ("stop" | "length")."""
    was_training = model.training
    model.eval()
    out = []
    per_batch = max(1, batch_size // n_samples)
    for i in range(0, len(prompts), per_batch):
        chunk = prompts[i:i + per_batch]
        ids = [tok.render_prompt([{"role": "user", "content": p}]) for p in chunk]
        r = sample(model, ids, max_new_tokens, temperature=temperature, top_p=top_p,
                   n_samples=n_samples, stop_tokens=tok.stop_tokens,
                   seed=None if seed is None else seed + i, vocab_limit=tok.n_vocab)
        for toks, fin in zip(r.completions(), r.finish):
            body = toks[:-1] if fin == "stop" else toks
            out.append(dict(text=tok.decode(body), n_tokens=len(toks), finish=fin))
    model.train(was_training)
    return out


def task_accuracy(model, tok, task, problems: list[dict], max_new_tokens: int, **kw):
    """Fraction of replies the task's exact checker accepts, and the replies with verdicts."""
    replies = respond(model, tok, [user_prompt(p, tok) for p in problems], max_new_tokens, **kw)
    n = len(replies) // max(len(problems), 1)
    for j, r in enumerate(replies):
        r["correct"] = bool(task.check(r["text"], problems[j // n]))
    acc = sum(r["correct"] for r in replies) / max(len(replies), 1)
    return acc, replies


def breakdown(task, problems: list[dict], replies: list[dict]) -> dict:
    """Share and accuracy of each response style the model chose (task.classify_style), and
    accuracy per difficulty level: what SFT taught, and where RL has room."""
    n = len(replies) // max(len(problems), 1)
    by_style, by_level = defaultdict(list), defaultdict(list)
    for j, r in enumerate(replies):
        by_style[task.classify_style(r["text"])].append(r["correct"])
        by_level[problems[j // n].get("level", 0)].append(r["correct"])
    style = {s: {"frac": len(v) / len(replies), "acc": sum(v) / len(v)}
             for s, v in sorted(by_style.items())}
    level = {str(k): sum(v) / len(v) for k, v in sorted(by_level.items())}
    return {"style": style, "level": level}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, eq. 1):
    1 - C(n-c, k) / C(n, k), computed as the stable product 1 - prod_{i=n-c+1}^{n} (1 - k/i)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def checked_answer(text: str, synthetic: bool) -> str | None:
    """The answer the checker reads, which is the one maj@k must vote with: a synthetic task's
    check() reads the last \\boxed{} and nothing else, grade() reads extract_answer (with its
    fallbacks). Voting with another extraction lets replies the checker calls unanswered
    (unboxed, cut at the cap) vote, and splits a class's members between verdicts."""
    return last_boxed(text) if synthetic else extract_answer(text)


def majority_vote(samples: list[tuple[str | None, bool]], same) -> bool:
    """maj@k (self-consistency, Wang et al. 2022): samples are (answer, verdict), the answer the
    checker read (checked_answer), so every member of a class has the verdict of its answer.
    Answers are grouped into classes with `same(a, b)`; the largest class wins (the one seen
    first on ties) and its first member's verdict is the result. No answer at all: False."""
    classes = []  # [representative answer, votes, verdict]
    for ans, ok in samples:
        if ans is None:
            continue
        for c in classes:
            if same(c[0], ans):
                c[1] += 1
                break
        else:
            classes.append([ans, 1, ok])
    if not classes:
        return False
    return bool(max(classes, key=lambda c: c[1])[2])  # max keeps the first of equal counts
