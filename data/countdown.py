"""
Countdown: reach a target from 3 or 4 numbers with + - * /, using each number exactly once.

    python -m data.countdown --n 1000 --seed 0    # style mix, per-style accuracy, sample traces

The task of Stream of Search (Gandhi et al. 2024) and TinyZero. Problems are made by combining
random numbers (3-4 distinct in 1..25, target 10..100, intermediates in 1..MAX_VALUE), so every
one is solvable; `answer` is the expression that made it. Exact integers only: a step writes the
larger number first so '-' never goes negative, and '/' is allowed only when it divides.
Trace styles (STYLE_MIX) are depth-first-search budgets, one line per node ("try 17+5=22 ->
[3, 22]", then " 22*3=66 yes"); "backtrack" marks every dead end and appears nowhere else,
"check: EXPR = TARGET" verifies, and a trace out of budget boxes its best (wrong) expression.
The trace format, the mix and its accuracies: docs/tasks.md.

Footgun: check() parses the boxed expression with its own recursive-descent parser (never eval:
model output is hostile input), evaluates with Fractions, and accepts iff the value equals the
target and the numbers used are exactly the problem's multiset (non-integer intermediates pass).
"""
import argparse
import random
import re
import sys
from fractions import Fraction

from data.common import boxed_start, print_report, sample_problems, sft_examples
from nanorlsp.verifier import last_boxed

NAME = "countdown"
STYLE_MIX = {"direct": 0.20, "short": 0.25, "medium": 0.30, "long": 0.25}
BUDGETS = {"direct": 0, "short": 10, "medium": 40, "long": 160}  # DFS nodes per style
STYLES = (*STYLE_MIX, "path")   # every style make_trace writes ('path' only when asked for)
MARKERS = {"backtrack": "backtrack", "verify": "check:"}  # exact substrings, one per behaviour
MAX_VALUE = 999  # no intermediate above this: short lines, and big products rarely help
MAX_EXPR_CHARS = 200  # check() rejects longer boxed answers before parsing

# -----------------------------------------------------------------------------
# expressions: an item is (value, text, prec); prec 3 = number, 2 = * or /, 1 = + or -


def _combine(a, b, op, max_value=MAX_VALUE):
    """The item for `a op b` (larger first), minimally parenthesised; None if not allowed."""
    if a[0] < b[0]:
        a, b = b, a
    (x, ta, pa), (y, tb, pb) = a, b
    if op == "+":
        v = x + y
    elif op == "-":
        v = x - y
    elif op == "*":
        v = x * y
    else:
        v = x // y if y and x % y == 0 else None
    if not v or v > max_value:  # inexact division, a zero difference (never useful), or huge
        return None
    p = 1 if op in "+-" else 2
    # left-associative parsing: the left side needs parens only when it binds looser; the right
    # side also when it binds equally and op is '-' or '/' (a-(b+c) != a-b+c).
    if pa < p:
        ta = f"({ta})"
    if pb < p or (pb == p and op in "-/"):
        tb = f"({tb})"
    return (v, f"{ta}{op}{tb}", p), f"{x}{op}{y}={v}"


def _children(items, max_value=MAX_VALUE):
    """All (new item, remaining items, step text) from combining two of `items`.

    Steps that lead to the same multiset of values (x*1 and x/1, or repeated numbers) lead to
    the same subtree, so only the first is kept: a visited-state check that keeps traces short.
    """
    out, seen = [], set()
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            rest = items[:i] + items[i + 1:j] + items[j + 1:]
            for op in "+-*/":
                r = _combine(items[i], items[j], op, max_value)
                if r is None:
                    continue
                state = tuple(sorted([it[0] for it in rest] + [r[0][0]]))
                if state not in seen:
                    seen.add(state)
                    out.append((r[0], rest, r[1]))
    return out


# -----------------------------------------------------------------------------
# problems


def _draw(rng: random.Random, top: int = 25, max_value: int = MAX_VALUE) -> dict:
    """One solvable problem: combine random numbers in 1..top in random order until a target
    lands. A problem whose max_value is not MAX_VALUE carries it (make_trace's search obeys it)."""
    while True:
        k = rng.choice((3, 4))
        numbers = sorted(rng.sample(range(1, top + 1), k))
        items = [(n, str(n), 3) for n in numbers]
        while len(items) > 1:
            new, rest, _ = rng.choice(_children(items, max_value))
            items = rest + [new]
        value, expr, _ = items[0]
        # random combining favours small targets; thin them so targets spread over 10..100
        if 10 <= value <= 100 and rng.random() < value / 60:
            return dict(key=f"{','.join(map(str, numbers))}->{value}",
                        prompt=f"Using the numbers {', '.join(map(str, numbers))}, reach {value} "
                               f"with + - * /. Use each number once.",
                        answer=expr, numbers=numbers, target=value, level=k,
                        **({} if max_value == MAX_VALUE else {"max_value": max_value}))


def make_problems(split: str, n: int, seed: int, distinct: bool = True) -> list[dict]:
    return sample_problems(_draw, split, n, seed, distinct=distinct)


# -----------------------------------------------------------------------------
# traces: budgeted depth-first search


def _search(items, target, depth, budget, rng, lines, st, max_value=MAX_VALUE):
    """DFS from `items`; returns the winning item or None (dead end or budget spent)."""
    kids = _children(items, max_value)
    rng.shuffle(kids)  # random child order: traces vary, and a small budget is a gamble
    pad = " " * depth
    for new, rest, step in kids:
        if st["nodes"] >= budget:
            return None
        st["nodes"] += 1
        if not rest:  # the last two numbers: a leaf, the expression is complete
            hit = new[0] == target
            lines.append(f"{pad}{step} {'yes' if hit else 'no'}")
            if st["best"] is None or abs(new[0] - target) < abs(st["best"][0] - target):
                st["best"] = new
            if hit:
                return new
            continue
        state = sorted([it[0] for it in rest] + [new[0]])
        lines.append(f"{pad}try {step} -> {state}")
        win = _search(rest + [new], target, depth + 1, budget, rng, lines, st, max_value)
        if win is not None:
            return win
        if st["nodes"] >= budget:
            return None  # out of budget, not a dead end: no backtrack line
        lines.append(f"{pad}backtrack")
    return None


def _path(items, target, rng, depth=0, max_value=MAX_VALUE):
    """The lines of one winning line of moves (a DFS in random child order that writes only the
    moves it kept) and the winning item, or None when no line from `items` reaches the target."""
    kids = _children(items, max_value)
    rng.shuffle(kids)
    pad = " " * depth
    for new, rest, step in kids:
        if not rest:
            if new[0] == target:
                return [f"{pad}{step} yes"], new
            continue
        found = _path(rest + [new], target, rng, depth + 1, max_value)
        if found is not None:
            state = sorted([it[0] for it in rest] + [new[0]])
            return [f"{pad}try {step} -> {state}"] + found[0], found[1]
    return None


def make_trace(problem: dict, style: str, rng: random.Random) -> str:
    """The assistant response for `problem` in `style` (see the module docstring)."""
    target = problem["target"]
    if style == "direct":
        return f"\\boxed{{{problem['answer']}}}"
    if style != "path" and style not in BUDGETS:     # BUDGETS: a user may add a search budget
        raise ValueError(f"unknown countdown style {style!r} (choose from {', '.join(STYLES)})")
    items = [(n, str(n), 3) for n in problem["numbers"]]
    mv = problem.get("max_value", MAX_VALUE)   # countdown_small's problems: 99
    lines = [f"goal {target} from {sorted(problem['numbers'])}"]
    if style == "path":   # every problem is solvable, so a full search finds a line
        moves, win = _path(items, target, rng, 0, mv)
        return "\n".join(lines + moves + [f"\\boxed{{{win[1]}}}"])
    st = {"nodes": 0, "best": None}
    win = _search(items, target, 0, BUDGETS[style], rng, lines, st, mv)
    if win is not None:
        lines.append(f"check: {win[1]} = {target}")
        lines.append(f"\\boxed{{{win[1]}}}")
    else:  # the budget ran out (problems are solvable, so an exhaustive search never gets here)
        v, expr, _ = st["best"]  # budgets >= 3 always reach a leaf before they run out
        lines.append("out of budget")
        lines.append(f"best: {expr} = {v} (off by {abs(v - target)})")
        lines.append(f"\\boxed{{{expr}}}")
    return "\n".join(lines)


_NODE = re.compile(r"^\s*(try )?\d+[+\-*/]\d+=", re.M)
_STEP = re.compile(r"^\s*(?:try )?(\d+)([+\-*/])(\d+)=(-?\d+)", re.M)   # a node, its operands


def step_errors(response: str) -> tuple[int, int]:
    """(search steps, wrong ones): the steps `x op y=v` of a (model's) search whose arithmetic is
    wrong. The verifier checks only the boxed expression; this checks the search that led there."""
    n = bad = 0
    for x, op, y, v in _STEP.findall(response):
        x, y, v = int(x), int(y), int(v)
        ok = {"+": x + y == v, "-": x - y == v, "*": x * y == v, "/": y != 0 and x == y * v}[op]
        n, bad = n + 1, bad + (not ok)
    return n, bad


def step_error_totals(responses) -> tuple[int, int]:
    """step_errors summed over many responses: (search steps, wrong ones)."""
    n = bad = 0
    for r in responses:
        steps, wrong = step_errors(r)
        n, bad = n + steps, bad + wrong
    return n, bad


def classify_style(response: str) -> str:
    """Which style a (model's) response follows: direct (no search), else the smallest budget
    that covers its number of search nodes (each `try` line and each final step is a node)."""
    if "\n" not in response.strip():
        return "direct"
    if not any(w in response for w in ("backtrack", "check:", "out of budget")):
        return "path"   # a line of moves with no dead end or check (possibly from any style)
    nodes = len(_NODE.findall(response))
    return next((s for s in ("short", "medium") if nodes <= BUDGETS[s]), "long")


def make_sft_examples(n: int, seed: int, split: str = "train",
                      styles: dict | None = None) -> list[dict]:
    """n problems of `split`, each with a demonstration in a style drawn from STYLE_MIX (or
    only from `styles`: data.common.restrict_mix)."""
    return sft_examples(sys.modules[__name__], n, seed, split, styles)


# -----------------------------------------------------------------------------
# checker: a tiny recursive-descent parser over digits, + - * / ( ) and spaces


class _Parser:
    """expr := term (('+'|'-') term)*;  term := atom (('*'|'/') atom)*;  atom := int | (expr)"""

    def __init__(self, s):
        self.s, self.i, self.used = s.replace(" ", ""), 0, []

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else ""

    def expr(self):
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.peek()
            self.i += 1
            w = self.term()
            v = v + w if op == "+" else v - w
        return v

    def term(self):
        v = self.atom()
        while self.peek() in ("*", "/"):
            op = self.peek()
            self.i += 1
            w = self.atom()
            v = v * w if op == "*" else v / w  # Fraction / 0 raises ZeroDivisionError
        return v

    def atom(self):
        if self.peek() == "(":
            self.i += 1
            v = self.expr()
            if self.peek() != ")":
                raise ValueError("unbalanced parenthesis")
            self.i += 1
            return v
        j = self.i
        while self.peek().isdigit() and self.peek().isascii():
            self.i += 1
        if j == self.i or self.i - j > 6:  # no number here, or an absurdly long one
            raise ValueError(f"expected a number at {j}")
        self.used.append(int(self.s[j:self.i]))
        return Fraction(self.used[-1])


def answer_start(response: str) -> int | None:
    """Where the answer check() reads begins (the last \\boxed), or None (see data/arith.py)."""
    return boxed_start(response)


def check(response: str, problem: dict) -> bool:
    """True iff the last \\boxed{} is an expression over exactly the given numbers = target."""
    expr = last_boxed(response)
    if expr is None or len(expr) > MAX_EXPR_CHARS:
        return False
    p = _Parser(expr)
    try:
        value = p.expr()
    except (ValueError, ZeroDivisionError, RecursionError):
        return False
    if p.i != len(p.s):  # trailing junk ("=82", "**", letters, ...)
        return False
    return value == problem["target"] and sorted(p.used) == sorted(problem["numbers"])


# -----------------------------------------------------------------------------

def main(task) -> None:
    """`python -m data.countdown` (and data.countdown_small): the style report and two traces."""
    ap = argparse.ArgumentParser(description=f"{task.NAME} trace-style report")
    ap.add_argument("--n", type=int, default=1000, help="SFT examples in the report")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print_report(task, args.n, args.seed)
    rows = [r for r in task.make_sft_examples(50, args.seed) if r["style"] != "direct"]
    for want in (True, False):  # one solved search, one that ran out of budget
        r = next((r for r in rows if task.check(r["response"], r) == want), None)
        if r:
            print(f"\n--- {r['style']}, {'solved' if want else 'unsolved'}: {r['prompt']}")
            print(r["response"])


if __name__ == "__main__":
    import data.countdown as task  # the module object (not __main__), as print_report expects
    main(task)
