"""
arith: multi-digit arithmetic, the default nanorlsp task.

    python -m data.arith            # the trace-style mix, each style's accuracy, sample traces

"What is A + B?", "A - B", "A * B" at five levels: one-digit facts; add/sub 2 digits and 1 digit;
add/sub 2-digit; add/sub 3-5 digits; multiply 2-3 digits x 1 digit. SFT demonstrations show the
reasoning process (RLSP stage 1) in four styles: direct (the answer only), steps (digit columns
with carries/borrows), check (steps, then a "check:" line recomputing the answer's last digit),
backtrack (one wrong column caught: "wait, 7+9=16 not 15"). The direct share falls with
difficulty (DIRECT_SHARE). Every demonstration is correct, but a tiny model cannot compute a
4-digit sum in one token step, so after SFT its direct answers are often wrong while the long
styles are right: the room RLSP's exploration reward opens for RL (stage 2).
Behaviour markers are exact lines, "check:" (verification) and "wait," (backtracking), so
emergence is counted without keyword guessing. Shares, accuracies, design: docs/tasks.md.
"""
import argparse
import random
import re
import sys

from data.common import boxed_start, print_report, sample_problems, sft_examples
from nanorlsp.verifier import last_boxed

NAME = "arith"
STYLE_MIX = {"direct": 0.60, "steps": 0.20, "check": 0.10, "backtrack": 0.10}  # over all levels
LEVELS = (1, 2, 3, 4, 5)
# The demonstrator answers easy problems directly more often than hard ones (as people do); the
# shares average to STYLE_MIX's 0.60 over the uniformly drawn levels. The rest is split 2:1:1
# between steps, check and backtrack.
DIRECT_SHARE = {1: 0.85, 2: 0.75, 3: 0.65, 4: 0.60, 5: 0.15}


def style_mix(p: dict) -> dict[str, float]:
    """The style distribution of the demonstration for problem p (depends on its level)."""
    d = DIRECT_SHARE[p["level"]]
    return {"direct": d, "steps": (1 - d) / 2, "check": (1 - d) / 4, "backtrack": (1 - d) / 4}


# -----------------------------------------------------------------------------
# problems

def _draw(rng: random.Random, level: int | None = None) -> dict:
    level = level or rng.choice(LEVELS)
    nd = lambda lo, hi: rng.randint(10 ** (lo - 1), 10 ** hi - 1)  # noqa: E731 (lo..hi digits)
    if level == 1:
        op, a, b = rng.choice("+-*"), rng.randint(0, 9), rng.randint(0, 9)
    elif level == 2:
        op, a, b = rng.choice("+-"), nd(2, 2), rng.randint(0, 9)
    elif level <= 4:
        op = rng.choice("+-")
        digits = {3: (2, 2), 4: (3, 5)}[level]
        a, b = nd(*digits), nd(*digits)
    else:
        op, a, b = "*", nd(2, 3), rng.randint(2, 9)
    ans = a + b if op == "+" else a - b if op == "-" else a * b
    # the split key is canonical: a + b and b + a (a * b, b * a) are one problem, on one side of
    # the train/test split (they were two keys, so 3+4 could be trained on and 4+3 tested)
    x, y = (min(a, b), max(a, b)) if op in "+*" else (a, b)
    return {"key": f"{x}{op}{y}", "prompt": f"What is {a} {op} {b}?", "answer": str(ans),
            "a": a, "b": b, "op": op, "level": level}


def make_problems(split: str, n: int, seed: int, level: int | None = None,
                  distinct: bool = True) -> list[dict]:
    """n problems of `split` ('train' or 'test'); all levels mixed unless `level`.

    Distinct sets (the default, for evaluation) hold every one-digit fact at most once: level 1
    has only 210 distinct problems (a + b and b + a are one; 17 of them in the test split), so
    large distinct sets are mostly levels 2-5.
    """
    return sample_problems(lambda rng: _draw(rng, level), split, n, seed, distinct=distinct)


# -----------------------------------------------------------------------------
# traces: each function returns the lines of the worked solution

def _digits(n: int) -> list[int]:
    """Little-endian digits: 4738 -> [8, 3, 7, 4]."""
    return [int(c) for c in reversed(str(n))]


def _add_lines(a: int, b: int) -> list[str]:
    """Column addition, right to left. Each line carries the result so far, so the answer is
    the last line's number (no digit reversal left for the model to do at the end)."""
    da, db = _digits(a), _digits(b)
    lines, carry, acc = [], 0, ""
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        s = x + y + carry
        terms = f"{x}+{y}" + (f"+{carry}" if carry else "")
        carry, acc = s // 10, str(s % 10) + acc
        lines.append(f"{terms}={s}: {acc}" + (" carry 1" if carry else ""))
    if carry:
        acc = "1" + acc
        lines.append(f"carry 1: {acc}")
    return lines


def _sub_lines(a: int, b: int) -> list[str]:
    """Column subtraction a - b for a >= b, borrowing right to left."""
    da, db = _digits(a), _digits(b)
    lines, borrow, acc = [], 0, ""
    for i in range(len(da)):
        x, y = da[i], (db[i] if i < len(db) else 0)
        d = x - y - borrow
        terms = f"{x}-{y}" + (f"-{borrow}" if borrow else "")
        if d < 0:
            acc = str(d + 10) + acc
            lines.append(f"{terms}={d}, +10={d + 10}: {acc} borrow 1")
            borrow = 1
        else:
            acc = str(d) + acc
            lines.append(f"{terms}={d}: {acc}")
            borrow = 0
    stripped = acc.lstrip("0") or "0"
    if stripped != acc:
        lines.append(f"drop leading zeros: {stripped}")
    return lines


def _mul1_lines(a: int, d: int) -> list[str]:
    """a times a single digit d, digit by digit with carries."""
    lines, carry, acc = [], 0, ""
    for x in _digits(a):
        p = x * d + carry
        terms = f"{x}*{d}" + (f"+{carry}" if carry else "")
        carry, acc = p // 10, str(p % 10) + acc
        lines.append(f"{terms}={p}: {acc}" + (f" carry {carry}" if carry else ""))
    if carry:
        acc = str(carry) + acc
        lines.append(f"carry {carry}: {acc}")
    return lines


def _solution_lines(p: dict) -> list[str]:
    a, b, op = p["a"], p["b"], p["op"]
    if op == "+":
        return _add_lines(a, b)
    if op == "-":
        if a >= b:
            return _sub_lines(a, b)
        # a < b: compute b - a and negate
        lines = _sub_lines(b, a)
        return [f"{a} < {b}, so compute {b} - {a} and negate"] + lines + [f"negate: {-(b - a)}"]
    return _mul1_lines(a, b)  # multipliers are single digits (level 5)


def _result_of(line: str) -> str:
    """The running result on a solution line ("3+5+1=9: 94 carry 0" -> "94")."""
    m = re.search(r":\s*(-?\d+)", line)
    return m.group(1) if m else ""


def _corrupt(line: str, rng: random.Random) -> str | None:
    """The line with a plausible wrong step: its sum off by one, and the digit it writes too."""
    m = re.match(r"^([\d+\-*]+)=(-?\d+)(.*)$", line)
    if not m or "," in line:  # skip borrow lines; keep the mistake simple to spot
        return None
    terms, val, rest = m.group(1), int(m.group(2)), m.group(3)
    wrong = val + rng.choice((-1, 1))
    if wrong < 0:
        wrong = val + 1
    acc = _result_of(line)
    if not acc:
        return None
    wrong_acc = str(wrong % 10) + acc[1:]
    return f"{terms}={wrong}: {wrong_acc}" + rest[len(f": {acc}"):]


def _check_line(p: dict) -> str:
    """Verification a small model can really do: recompute the answer's last digit from the
    operands' last digits (one digit operation) and compare it with the answer's."""
    a, b, op = p["a"], p["b"], p["op"]
    if op == "-" and a < b:
        a, b = b, a  # the magnitude was computed as b - a
    x, y = a % 10, b % 10
    v = x + y if op == "+" else x - y if op == "-" else x * y
    last = abs(int(p["answer"])) % 10
    return f"check: last digit {x}{op}{y}={v} -> {v % 10}, answer ends in {last}, ok"


def make_trace(p: dict, style: str, rng: random.Random) -> str:
    """The assistant's response for problem p in the given style; ends with \\boxed{answer}."""
    ans = p["answer"]
    if style == "direct":
        return f"\\boxed{{{ans}}}"
    lines = _solution_lines(p)
    if style == "check":
        lines = lines + [_check_line(p)]
    elif style == "backtrack":
        candidates = [i for i, ln in enumerate(lines) if _corrupt(ln, rng)]
        if candidates:
            i = rng.choice(candidates)
            wrong = _corrupt(lines[i], rng)
            bad_val = re.match(r"^[\d+\-*]+=(-?\d+)", wrong).group(1)
            good_val = re.match(r"^[\d+\-*]+=(-?\d+)", lines[i]).group(1)
            terms = lines[i].split("=")[0]
            fix = f"wait, {terms}={good_val} not {bad_val}. redo:"
            lines = lines[:i] + [wrong, fix] + lines[i:]
    elif style != "steps":
        raise ValueError(f"unknown arith style {style!r} (choose from {', '.join(STYLE_MIX)})")
    return "\n".join(lines) + f"\n\\boxed{{{ans}}}"


def make_sft_examples(n: int, seed: int, split: str = "train",
                      styles: dict | None = None) -> list[dict]:
    """n problems of `split`, each with a demonstration in a style drawn from STYLE_MIX (or
    only from `styles`: data.common.restrict_mix)."""
    return sft_examples(sys.modules[__name__], n, seed, split, styles)


def classify_style(response: str) -> str:
    """Which demonstration style a (model's) response follows, from its exact markers."""
    if "wait," in response:
        return "backtrack"
    if "check:" in response:
        return "check"
    return "steps" if "\n" in response else "direct"


# -----------------------------------------------------------------------------
# the exact checker

_INT = re.compile(r"-?\d{1,40}")


def answer_start(response: str) -> int | None:
    """Where the answer check() reads begins (the last \\boxed), or None: the RL reward's
    no-answer test and reasoning length use this, so they agree with the checker."""
    return boxed_start(response)


def check(response: str, problem: dict) -> bool:
    """True iff the last \\boxed{...} of the response is exactly the integer answer."""
    got = last_boxed(response)
    if got is None:
        return False
    got = got.strip()
    return bool(_INT.fullmatch(got)) and int(got) == int(problem["answer"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="SFT examples to report on")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print_report(sys.modules[__name__], args.n, args.seed)
    rng = random.Random(args.seed)
    for style in STYLE_MIX:
        p = _draw(rng, level=rng.choice((3, 5)))
        print(f"\n--- {style}: {p['prompt']}\n{make_trace(p, style, rng)}")
