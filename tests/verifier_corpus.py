r"""
The verifier's agreement corpus: real answers (MATH-500, MATH train, GSM8K test, AIME 2024 from
../shared/data) written the ways models write them, plus perturbed wrong answers, measured
against Math-Verify (the grader TRL and open-r1 use).

    python tests/verifier_corpus.py                  # agreement table (pip install math-verify)
    python tests/verifier_corpus.py --show 40        # ... and the first 40 disagreements
    python tests/verifier_corpus.py --limit 600      # a quick subsample (what the test runs)

Each item is (kind, form, response, gold, intended): `intended` is what the item was built to
be (True: the gold's answer rewritten, False: a perturbed answer, None: a rewrite whose verdict
is a matter of convention). The kinds: free text (labelled answers, math spans,
the last number), several answers, relations, labels, numbers, structures, unequal, plus plain
boxed answers and SmolLM2-style transcripts (step lists, "So, Janet has 18 apples left.").

The generators are written for nanorlsp. No other project's test cases are used: those are the
outside measure. Math-Verify is called as its README shows: verify(parse(gold), parse(reply)),
with the gold boxed (\boxed{gold}) so its extraction finds it, and its default extraction
(LaTeX and plain expressions, anchors optional) for the reply.

The corpus is deterministic (seeded). It builds without nanorlsp or math_verify; main() imports
both. The data is read from ../shared/data and never copied into the repo.
"""
import argparse
import collections
import json
import os
import random
import re
import sys
import time
from fractions import Fraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")

# -----------------------------------------------------------------------------
# Reading the answers


def _rows(name):
    path = os.path.join(DATA, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def available():
    return all(os.path.exists(os.path.join(DATA, n))
               for n in ("math500.jsonl", "math_train.jsonl", "gsm8k_test.jsonl", "aime24.jsonl"))


_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_items():
    """(rationale without calculator notes and without its '#### n' line, n)."""
    out = []
    for r in _rows("gsm8k_test.jsonl"):
        body, ans = r["answer"].rsplit("####", 1)
        out.append((_CALC.sub("", body).strip(), ans.strip()))
    return out

# -----------------------------------------------------------------------------
# Answer shapes and rewrites


_INT = re.compile(r"-?\d+")
_FRAC = re.compile(r"(-?)\\[dt]?frac\{?(\d+)\}?\{?(\d+)\}?")


def shape(a):
    """A coarse shape of a MATH answer string, used to pick forms and rewrites."""
    s = a.strip()
    if _INT.fullmatch(s):
        return "int"
    if re.fullmatch(r"-?\d+\.\d+", s):
        return "decimal"
    if _FRAC.fullmatch(s):
        return "fraction"
    if "\\begin{pmatrix}" in s:
        return "matrix"
    if "\\text{" in s and not re.search(r"\d", s):
        return "text"
    if re.search(r"\\circ", s):
        return "degree"
    if "\\%" in s:
        return "percent"
    if "\\cup" in s or re.fullmatch(r"\\left[(\[].*\\right[)\]]|[(\[].*[)\]]", s) and \
            "\\infty" in s:
        return "interval"
    if re.fullmatch(r"(\\left)?\(.*,.*(\\right)?\)", s):
        return "tuple"
    if "=" in s:
        return "equation"
    if re.search(r"\\le|\\ge|<|>", s):
        return "inequality"
    if "," in s and not re.search(r"\d,\\!\s*\d|\d,\d{3}", s) and \
            not re.match(r"[(\[]|\\left|\\\{", s):
        return "list"
    if re.search(r"\\text\{", s):
        return "unit"
    return "expression"


def list_items(s):
    """The items of a bare list answer: '2, 3, \\text{ and } 4' -> ['2', '3', '4']."""
    s = re.sub(r"\\text\{\s*,?\s*and\s*\}", ",", s)
    s = re.sub(r"\\[,;!]", " ", s)
    parts, depth, cur = [], 0, ""
    for c in s:
        depth += (c in "({[") - (c in ")}]")
        if c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    return [x for x in parts + [cur.strip()] if x]


def decimal_of(q, digits):
    """q rounded to `digits` decimals, as printed ("0.6667")."""
    scaled = round(q * 10 ** digits)
    sign = "-" if scaled < 0 else ""
    scaled = abs(scaled)
    whole, frac = divmod(scaled, 10 ** digits)
    return f"{sign}{whole}.{frac:0{digits}d}"


def terminating(q):
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def rewrites(a, rng):
    """Equivalent ways to write answer `a`: (text, intended). A rounded decimal of a repeating
    fraction is intended True (equal when it is the fraction rounded to its printed
    digits); with 3 digits it is a matter of convention (None)."""
    s, kind, out = a.strip(), shape(a), []
    if kind == "int":
        n = int(s)
        if abs(n) >= 1000:
            out.append((f"{n:,}", True))
        out.append((f"{n}.0" if rng.random() < 0.2 else f"{s}", True))
    elif kind == "fraction":
        m = _FRAC.fullmatch(s)
        q = Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)
        out.append((f"{m.group(1)}{m.group(2)}/{m.group(3)}", True))
        out.append((f"{m.group(1)}\\dfrac{{{m.group(2)}}}{{{m.group(3)}}}", True))
        if terminating(q):
            out.append((str(float(q)), True))
        else:
            digits = rng.choice([6, 6, 4, 3])
            out.append((decimal_of(q, digits), None if digits == 3 else True))
    elif kind == "decimal":
        q = Fraction(s)
        out.append((f"{q.numerator}/{q.denominator}" if q.denominator > 1 else str(q), True))
    elif kind == "degree" and re.fullmatch(r"-?[\d.]+\^\{?\\circ\}?\.?", s):  # not \tan 15^\circ
        out.append((re.sub(r"\^\{?\\circ\}?", "", s), True))
        out.append((re.sub(r"\^\{?\\circ\}?", " degrees", s), True))
    elif kind == "percent":
        out.append((s.replace("\\%", ""), True))
        out.append((s.replace("\\%", " percent"), True))
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*\\%", s)
        if m:
            out.append((str(Fraction(m.group(1)) / 100 if "." not in m.group(1) else
                            float(Fraction(m.group(1)) / 100)), True))
    elif kind == "list":
        parts = list_items(s)
        rng.shuffle(parts)
        out.append((", ".join(parts), True))
        out.append(("\\{" + ", ".join(parts) + "\\}", True))
    elif kind == "tuple":
        inner = re.sub(r"^\\left\(|\\right\)$", "", s).strip("()")
        out.append(("(" + inner.replace(" ", "") + ")", True))
    elif kind == "interval":
        out.append((s.replace("\\left", "").replace("\\right", ""), True))
    elif kind == "text":
        out.append((re.sub(r"\\text\{([^{}]*)\}", r"\1", s), True))
    elif kind == "equation":
        lhs, rhs = s.split("=", 1)
        if re.fullmatch(r"\s*[a-zA-Z]\s*", lhs):
            out.append((rhs.strip(), True))
    elif kind == "expression":
        m = re.fullmatch(r"(\d+)\\sqrt\{?(\d+)\}?", s)
        if m:
            out.append((f"\\sqrt{{{int(m.group(1)) ** 2 * int(m.group(2))}}}", True))
        m = re.fullmatch(r"\\frac\{(\d*)\\sqrt\{(\d+)\}\}\{(\d+)\}", s)
        if m:
            out.append((f"\\frac{{{m.group(1) or 1}}}{{{m.group(3)}}}\\sqrt{{{m.group(2)}}}", True))
        if "\\pi" in s:
            out.append((s.replace("\\pi", "\\pi "), True))
    return out


_NUM = re.compile(r"\d+")


def perturb(a, rng):
    """A wrong answer near `a`: one number changed, a sign flipped, a tuple reordered, a
    bracket changed, an element dropped; None when no safe perturbation is known."""
    s, kind = a.strip(), shape(a)
    if kind == "tuple" and rng.random() < 0.3:
        inner = re.sub(r"^\\left\(|\\right\)$", "", s).strip("()")
        parts = [p.strip() for p in inner.split(",")]
        if len(set(parts)) > 1:
            return "(" + ", ".join(parts[::-1]) + ")"
    if kind == "interval" and rng.random() < 0.4:  # a bracket at a finite end: ( <-> [
        m = re.search(r"[(\[](?!\s*-?\\infty)", s.replace("\\left", " " * 5))
        if m:
            return s[:m.start()] + {"(": "[", "[": "("}[s[m.start()]] + s[m.start() + 1:]
    if kind == "list" and rng.random() < 0.4:
        parts = list_items(s)
        return ", ".join(parts[:-1])
    if s.startswith("-") and rng.random() < 0.3:
        return s[1:]
    nums = list(_NUM.finditer(s))
    if not nums:
        return None
    m = rng.choice(nums)
    n = int(m.group(0))
    # a new value for that number: off by one, or a digit slip
    new = n + rng.choice([1, -1, 2]) if n > 1 else n + 1
    if new == n or new < 0:
        new = n + 1
    return s[:m.start()] + str(new) + s[m.end():]

# -----------------------------------------------------------------------------
# Reply forms: the ways models hand in an answer


_REASONING = [
    "We start by writing down what we know.",
    "Let me work through this step by step.",
    "First, note that $3x + 2 = 11$ gives $x = 3$.",
    "Substituting $n = 4$ we get $2^4 = 16$, and $16 - 1 = 15$.",
    "The two cases give $12$ and $8$ respectively, so we add them.",
    "Expanding, $(a+b)^2 = a^2 + 2ab + b^2$.",
    "We compute $\\frac{6}{8} = \\frac{3}{4}$ along the way.",
    "Using the formula $A = \\pi r^2$ with $r = 2$.",
    "Checking small values: 1, 2, 3 and 4 all work.",
]


def reasoning(rng):
    return " ".join(rng.sample(_REASONING, rng.randint(1, 3)))


def math_forms(a, rng):
    """Replies that hand in LaTeX answer `a`, by kind: (kind, form, reply)."""
    r, a = reasoning(rng), a.strip()
    forms = [
        ("boxed", "boxed", f"{r}\nTherefore, the answer is $\\boxed{{{a}}}$."),
        ("boxed", "boxed-end", f"{r}\n\n\\[\n\\boxed{{{a}}}\n\\]"),
        ("free text", "final-answer-hope",
         f"{r}\nFinal Answer: The final answer is ${a}$. I hope it is correct."),
        ("free text", "answer-line", f"{r}\n\n**Answer:** ${a}$"),
        ("free text", "the-answer-is", f"{r} So the answer is ${a}$."),
        ("free text", "answer-tag-math", f"<think>\n{r}\n</think>\n<answer>${a}$</answer>"),
        ("free text", "answer-tag-plain", f"<think>\n{r}\n</think>\n<answer>{a}</answer>"),
        ("free text", "display-last", f"{r}\nPutting it together:\n\\[ {a} \\]"),
        ("free text", "dollar-display", f"{r}\nThis gives\n$$\n{a}\n$$"),
        ("free text", "inline-last", f"{r}\nThus the value we want is ${a}$."),
        ("free text", "paren-inline", f"{r} Hence the result is \\({a}\\)."),
    ]
    k = shape(a)
    if k in ("int", "fraction", "expression", "decimal"):
        forms.append(("labels", "x-equals", f"{r}\nSolving, we get $x = {a}$."))
        forms.append(("labels", "boxed-label", f"{r}\n\\boxed{{k = {a}}}"))
    if k == "decimal":
        forms.append(("numbers", "decimal-comma", f"{r}\nAnswer: {a.replace('.', ',')}"))
    if k == "int":
        n = int(a)
        b = rng.randint(1, 9)
        forms.append(("free text", "computation",
                      f"{r}\nIn total we get ${n - b} + {b} = {n}$ ways."))
    if k == "tuple":
        forms.append(("labels", "tuple-label", f"{r}\n\\boxed{{(a, b) = {a}}}"))
    if k == "list":
        parts = list_items(a)
        forms.append(("several answers", "several-boxes",
                      f"{r}\nThe solutions are " + ", ".join(f"$\\boxed{{{p}}}$" for p in parts)
                      + "."))
        forms.append(("several answers", "and-spans",
                      f"{r}\nThe solutions are " + ", ".join(f"$x = {p}$" for p in parts[:-1])
                      + f" and $x = {parts[-1]}$." if len(parts) > 1 else f"$x = {parts[0]}$."))
    if k == "matrix":
        forms.append(("structures", "matrix-bmatrix",
                      f"{r}\nSo the matrix is $$" + a.replace("pmatrix", "bmatrix") + "$$"))
    return forms


def union_as_inequality(a):
    """'(-\\infty, 2) \\cup (3, \\infty)' -> 'x < 2 \\text{ or } x > 3'; None for other unions."""
    s = a.replace("\\left", "").replace("\\right", "").replace(" ", "")
    m = re.fullmatch(r"\(-\\infty,([^,()\[\]]+)([)\]])\\cup([(\[])([^,()\[\]]+),\\infty\)", s)
    if not m:
        return None
    lo = "<" if m.group(2) == ")" else "\\le"
    hi = ">" if m.group(3) == "(" else "\\ge"
    return f"x {lo} {m.group(1)} \\text{{ or }} x {hi} {m.group(4)}"


def negated_inequality(ineq):
    """'x < 3' -> '-x > -3' (the same set, written the other way round)."""
    m = re.fullmatch(r"x (<|>|\\le|\\ge) (-?\d+)", ineq)
    if not m:
        return None
    flip = {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}[m.group(1)]
    return f"-x {flip} {-int(m.group(2))}"


def interval_as_inequality(a):
    """'(2, 5]' -> '2 < x \\le 5'; '(-\\infty, 3)' -> 'x < 3'; None for other shapes."""
    s = a.replace("\\left", "").replace("\\right", "").strip()
    m = re.fullmatch(r"([(\[])\s*([^,]+?)\s*,\s*([^,]+?)\s*([)\]])", s)
    if not m:
        return None
    lo, hi = m.group(2), m.group(3)
    lop = "<" if m.group(1) == "(" else "\\le"
    hop = "<" if m.group(4) == ")" else "\\le"
    if lo == "-\\infty" and hi == "\\infty":
        return None
    if lo == "-\\infty":
        return f"x {hop} {hi}"
    if hi == "\\infty":
        return f"x {'>' if lop == '<' else GE} {lo}"
    return f"{lo} {lop} x {hop} {hi}"

# -----------------------------------------------------------------------------
# GSM8K-style replies, and SmolLM2-style transcripts


GE, TIMES = "\\ge", "\\times"
_UNITS = ["dollars", "apples", "miles", "minutes", "cookies", "students", "hours", "pages"]


def number_formats(n, rng):
    """Ways to write GSM8K answer n in text (n is the gold string: '18', '1,600', '-3')."""
    v = int(n.replace(",", ""))
    out = [(str(v), True), (f"{v:,}", True), (f"${v:,}", True),
           (f"{v} {rng.choice(_UNITS)}", True)]
    if abs(v) >= 1000 and rng.random() < 0.5:
        out.append((f"{v:,}".replace(",", " "), True))  # 1 600: space thousands
    if rng.random() < 0.2:
        out.append((f"{v}.00", True))
    return out


def gsm8k_forms(body, n, rng):
    """Replies for one GSM8K problem: its own worked solution ending in several ways."""
    v = int(n.replace(",", ""))
    text, _ = rng.choice(number_formats(n, rng))
    unit = rng.choice(_UNITS)
    return [
        ("boxed", "gsm-boxed", f"{body}\nThe answer is $\\boxed{{{v}}}$."),
        ("free text", "gsm-hash", f"{body}\n#### {v}"),
        ("free text", "gsm-the-answer-is", f"{body}\nThe answer is {text}."),
        ("free text", "gsm-last-number", body),  # the solution itself: its last number
        ("free text", "gsm-sentence", f"{body}\nSo the total is {text}."),
        ("numbers", "gsm-formatted", f"{body}\n**Answer:** {text}"),
        ("numbers", "gsm-units", f"{body}\nTherefore, the answer is {v} {unit}."),
    ]


_SMOL_OPEN = ["To solve this problem, let's break it down step by step.",
              "Let's think through this carefully.",
              "Sure! Here's how to find the answer:",
              "To find the answer, we need to follow these steps:"]
_SMOL_CLOSE = ["So, the answer is {a}.", "Therefore, the final answer is {a}.",
               "The answer is: {a}", "Therefore, {who} has {a} {unit} in total.",
               "So {who} needs {a} {unit}.", "Final answer: {a}",
               "So the result is **{a}**.", "Hence, the answer is $\\boxed{{{a}}}$.",
               "The final answer is $\\boxed{{{a}}}$", "\\[ \\boxed{{{a}}} \\]",
               "Answer: {a} {unit}", "This means there are {a} {unit} left."]
_WHO = ["Janet", "Tom", "the baker", "Maria", "the school", "he", "she"]


def smol_transcript(v, rng, wrong=False, truncate=False):
    """A SmolLM2-like step-by-step reply that ends at answer v (an int): steps whose numbers
    lead to v, optional LaTeX in the steps, a closing sentence in one of many styles."""
    steps, x = [], rng.randint(2, 30)
    for k in range(rng.randint(2, 4)):
        y = rng.randint(2, 12)
        op, res = rng.choice([("+", x + y), ("*", x * y), ("-", x - y)])
        if rng.random() < 0.3:
            sym = TIMES if op == "*" else op
            steps.append(f"{k + 1}. Next, \\( {x} {sym} {y} = {res} \\)")
        else:
            steps.append(f"{k + 1}. We calculate {x} {op} {y} = {res}.")
        x = res
    a = v + (rng.choice([1, -1, 10]) if wrong else 0)
    steps.append(f"{len(steps) + 1}. Finally, we combine everything to get {a}.")
    body = rng.choice(_SMOL_OPEN) + "\n\n" + "\n".join(steps)
    if truncate:
        return body.rsplit("\n", 1)[0]  # cut off before the end: its last number is a step's
    close = rng.choice(_SMOL_CLOSE).format(a=a, who=rng.choice(_WHO), unit=rng.choice(_UNITS))
    return body + "\n\n" + close

def relation_items(a, source, rng, add):
    """Interval answer `a` as inequalities (and the other way round)."""
    ineq = interval_as_inequality(a) or union_as_inequality(a)
    if ineq is None:
        return
    add("relations", "interval-as-inequality", source,
        f"{reasoning(rng)}\nSo the solution set is $\\boxed{{{ineq}}}$.", a, True)
    add("relations", "inequality-gold", source, f"The answer is $\\boxed{{{a}}}$.", ineq, True)
    if (neg := negated_inequality(ineq)) is not None:
        add("relations", "negated-inequality", source, f"Hence $\\boxed{{{neg}}}$.", ineq, True)
    wrong = ineq.replace("<", ">") if "<" in ineq else ineq.replace(">", "<")
    if wrong != ineq:
        add("unequal", "perturbed-inequality", source, f"Thus $\\boxed{{{wrong}}}$.", ineq,
            False)

_STEP_STYLES = ["Step {k}: {line}", "{k}. {line}", "- {line}", "**Step {k}:** {line}", "{line}"]
_AFTERWORDS = ["", "", "", "\n\nI hope this helps!", "\n\nLet me know if you have any other "
               "questions.", " That's the final answer."]


def smol_rationale(body, n, rng, wrong=False):
    """A SmolLM2-like reply built on a real GSM8K solution: its lines as steps (in one of
    several list styles), then a closing sentence with the answer, sometimes a courtesy line.
    With wrong=True the closing number is off (an arithmetic slip in the last step)."""
    v = int(n.replace(",", "")) + (rng.choice([1, -1, 2, 10]) if wrong else 0)
    style = rng.choice(_STEP_STYLES)
    lines = [style.format(k=k + 1, line=x.strip()) for k, x in enumerate(body.split("\n"))
             if x.strip()]
    shown = rng.choice([f"{v}", f"{v:,}", f"${v}", f"**{v}**", f"{v} {rng.choice(_UNITS)}"])
    close = rng.choice(["So, the answer is {a}.", "Therefore, the total is {a}.",
                        "The answer is: {a}", "So {who} ends up with {a}.",
                        "The final answer is {a}.", "Hence, {who} gets {a}.",
                        "### Final Answer\n{a}", "The answer is $\\boxed{{{v}}}$."])
    return (rng.choice(_SMOL_OPEN) + "\n\n" + "\n".join(lines) + "\n\n" +
            close.format(a=shown, v=v, who=rng.choice(_WHO)) + rng.choice(_AFTERWORDS))

_NEXT_TURN = ("<|im_end|>\n<|im_start|>user\nThanks! And what is 3 + 4?<|im_end|>\n"
              "<|im_start|>assistant\n3 + 4 = 7.")
_PMATRIX = re.compile(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", re.S)


def matrix_as_sum(a):
    """An integer pmatrix answer written as (A - J) + J, J all ones; None for other answers."""
    m = _PMATRIX.fullmatch(a.strip())
    rows = [[c.strip() for c in r.split("&")] for r in m.group(1).split("\\\\")] if m else []
    if not rows or not all(_INT.fullmatch(c) for r in rows for c in r):
        return None
    def pm(cells): return "\\begin{pmatrix} " + " \\\\ ".join(" & ".join(r) for r in cells) + \
        " \\end{pmatrix}"
    return pm([[str(int(c) - 1) for c in r] for r in rows]) + " + " + \
        pm([["1"] * len(r) for r in rows])


MO_MATH, MO_GSM = "model output/math", "model output/gsm8k"  # their sources


def model_output_items(math_answers, gsm, rng, add):
    """Kinds of answer that are common in real model output and that the forms above miss:
    Minerva closings that name the answer before a verb, a template's next turn after the
    answer, thousands separators in math mode, several boxes with labels between them, golds
    written as labelled equations, expressions to evaluate (sums of numbers and matrices), decimal
    commas in prose and LaTeX escaped twice in a JSON-sourced gold; and wrong ones like them."""
    for a in math_answers:
        r, k = reasoning(rng), shape(a)
        add("model output", "minerva-named", MO_MATH, f"{r}\nFinal Answer: The value of the "
            f"expression is ${a}$.", a, True)
        if rng.random() < 0.15:  # one form among the kinds: not most of the items
            add("model output", "next-turn", MO_MATH,
                f"{r}\nThus the value we want is ${a}$.{_NEXT_TURN}", a, True)
        if "\\" in a and rng.random() < 0.5:
            add("model output", "gold-escaped-twice", MO_MATH, f"{r}\n\\boxed{{{a}}}",
                a.replace("\\", "\\\\"), True)
            if (wrong := perturb(a, rng)) is not None and wrong.replace(" ", "") != \
                    a.replace(" ", ""):
                add("unequal", "perturbed-gold-escaped-twice", MO_MATH, f"{r}\n\\boxed{{{wrong}}}",
                    a.replace("\\", "\\\\"), False)
        if k == "int":
            v, b = int(a), rng.randint(1, 9)
            add("model output", "minerva-named-plain", MO_MATH,
                f"{r}\nFinal Answer: The smallest $k$ is {v}.", a, True)
            add("model output", "sum-to-evaluate", MO_MATH, f"{r}\n\\boxed{{{v - b} + {b}}}", a,
                True)
            add("unequal", "perturbed-sum-to-evaluate", MO_MATH,
                f"{r}\n\\boxed{{{v - b} + {b + 1}}}", a, False)
        if k == "decimal" and not a.startswith("0") and len(a.split(".")[1]) != 3:  # 6,125: 6125
            add("model output", "decimal-comma-prose", MO_MATH,
                f"{r}\nLa respuesta es {a.replace('.', ',')}.", a, True)
        if k == "list" and 1 < len(parts := list_items(a)) <= 4 and len(set(parts)) == len(parts):
            add("model output", "boxes-with-labels", MO_MATH, f"{r}\nThe solutions are " +
                " and ".join(f"$x = \\boxed{{{p}}}$" for p in parts) + ".", a, True)
            add("unequal", "perturbed-boxes-with-labels", MO_MATH, f"{r}\nThe solutions are " +
                " and ".join(f"$x = \\boxed{{{p}}}$" for p in parts[:-1]) + ".", a, False)
        if k == "tuple" and len(parts := list_items(a.strip()[1:-1])) == 2:
            add("model output", "gold-as-equations", MO_MATH, f"{r}\n\\boxed{{{a}}}",
                f"x = {parts[0]}, y = {parts[1]}", True)
            add("model output", "reply-as-equations", MO_MATH,
                f"{r}\n\\boxed{{x = {parts[0]}}} and \\boxed{{y = {parts[1]}}}", a, True)
        if k == "matrix" and (total := matrix_as_sum(a)) is not None:
            add("model output", "matrix-sum", MO_MATH, f"{r}\n$$\\boxed{{{total}}}$$", a, True)
    for body, n in gsm:
        v = int(n.replace(",", ""))
        if v >= 1000:
            add("model output", "gsm-math-thousands", MO_GSM, f"{body}\nSo the total is "
                f"${v:,}$.", n, True)
            add("unequal", "perturbed-gsm-math-thousands", MO_GSM,
                f"{body}\nSo the total is ${v + 1000:,}$.", n, False)
        if rng.random() < 0.15:
            add("model output", "gsm-next-turn", MO_GSM,
                f"{body}\nSo the total is {v}.{_NEXT_TURN}", n, True)


# -----------------------------------------------------------------------------
# The corpus


def build(seed=0, n_math_train=1500):
    """The list of items: dicts with kind, form, source, response, gold, intended."""
    rng = random.Random(seed)
    items = []

    def add(kind, form, source, response, gold, intended):
        items.append(dict(kind=kind, form=form, source=source, response=response, gold=gold,
                          intended=intended))

    math500 = [r["answer"] for r in _rows("math500.jsonl")]
    train = [r["answer"] for r in _rows("math_train.jsonl") if r["answer"].strip()]
    train = random.Random(seed + 1).sample(train, n_math_train)
    for source, answers in (("math500", math500), ("math_train", train)):
        for a in answers:
            forms = math_forms(a, rng)
            for kind, form, reply in rng.sample(forms, min(2, len(forms))):
                add(kind, form, source, reply, a, True)
            for text, intended in rewrites(a, rng)[:2]:
                kind, form, reply = rng.choice(math_forms(text, rng)[:6])
                kind = {"degree": "structures", "matrix": "structures", "percent": "numbers",
                        "fraction": "numbers", "int": "numbers", "decimal": "numbers",
                        "list": "several answers", "interval": "relations",
                        "equation": "labels"}.get(shape(a), kind)
                add(kind, "rewrite-" + form, source, reply, a, intended)
            if shape(a) == "interval":
                relation_items(a, source, rng, add)
            wrong = perturb(a, rng)
            if wrong is not None and wrong.replace(" ", "") != a.replace(" ", ""):
                kind, form, reply = rng.choice(math_forms(wrong, rng))
                add("unequal", "perturbed-" + form, source, reply, a, False)

    # the rarer shapes of all of MATH train (lists, intervals, tuples, matrices, equations,
    # percents, degrees, units), so that each kind's figure rests on more than a few items
    seen = set(train) | set(math500)
    for a in [r["answer"] for r in _rows("math_train.jsonl")]:
        k = shape(a)
        if a in seen or k in ("int", "fraction", "expression", "decimal", "text"):
            continue
        seen.add(a)
        kind = {"list": "several answers", "interval": "relations", "tuple": "labels",
                "equation": "labels", "inequality": "relations"}.get(k, "structures"
                                                                  if k in ("matrix", "degree")
                                                                  else "numbers")
        for _, form, reply in rng.sample(math_forms(a, rng), 2):
            add(kind, form, "math_train_shapes", reply, a, True)
        if k == "interval":
            relation_items(a, "math_train_shapes", rng, add)
        for text, intended in rewrites(a, rng)[:1]:
            _, form, reply = rng.choice(math_forms(text, rng)[:6])
            add(kind, "rewrite-" + form, "math_train_shapes", reply, a, intended)
        wrong = perturb(a, rng)
        if wrong is not None and wrong.replace(" ", "") != a.replace(" ", ""):
            _, form, reply = rng.choice(math_forms(wrong, rng))
            add("unequal", "perturbed-" + form, "math_train_shapes", reply, a, False)

    for body, n in gsm8k_items():
        forms = gsm8k_forms(body, n, rng)
        for kind, form, reply in rng.sample(forms, 3):
            add(kind, form, "gsm8k", reply, n, True)
        v = int(n.replace(",", ""))
        wrong = v + rng.choice([1, -1, 10, 100]) if v != 0 else 1
        kind, form, reply = rng.choice(gsm8k_forms(body, str(wrong), rng)[:3] +
                                       gsm8k_forms(body, str(wrong), rng)[4:])
        add("unequal", "perturbed-" + form, "gsm8k", reply, n, False)
        if rng.random() < 0.5:
            add("transcript", "smol", "gsm8k", smol_transcript(v, rng), n, True)
        else:
            add("transcript", "smol-wrong", "gsm8k", smol_transcript(v, rng, wrong=True), n,
                False)
        if rng.random() < 0.5:
            add("transcript", "smol-rationale", "gsm8k", smol_rationale(body, n, rng), n, True)
        else:
            add("transcript", "smol-rationale-wrong", "gsm8k",
                smol_rationale(body, n, rng, wrong=True), n, False)
        if rng.random() < 0.1:
            add("transcript", "smol-truncated", "gsm8k",
                smol_transcript(v, rng, truncate=True), n, None)

    # the model-output kinds, drawn with their own generator so the items above stay as they were
    mo_rng = random.Random(seed + 2)
    every = [r["answer"] for r in _rows("math_train.jsonl") if r["answer"].strip()]
    rare = [a for a in every if shape(a) in ("list", "tuple", "matrix", "decimal")]
    model_output_items(mo_rng.sample(math500, 300) + mo_rng.sample(rare, 300),
                       mo_rng.sample(gsm8k_items(), 300), mo_rng, add)

    for r in _rows("aime24.jsonl"):
        a = r["answer"]
        v = int(a)
        for reply in (f"{reasoning(rng)}\nThus $m + n = {v}$, so the answer is $\\boxed{{{v}}}$.",
                      f"The answer is {a}.", f"Therefore the answer is ${v:03d}$.",
                      smol_transcript(v, rng)):
            add("boxed" if "boxed" in reply else "free text", "aime", "aime24", reply, a, True)
        add("unequal", "perturbed-aime", "aime24", f"So the answer is $\\boxed{{{v + 1}}}$.", a,
            False)
    return items

# -----------------------------------------------------------------------------
# Measuring agreement


_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)


def math_verify_grade(response, gold, tags=False):
    """Math-Verify's verdict, called as its README shows; the gold boxed so it is found. With
    tags=True the reply's <answer>...</answer> content is what is parsed, as tag-format reward
    functions call it (Math-Verify's number pattern needs a space or line start before a number,
    so '<answer>60</answer>' itself yields nothing)."""
    from math_verify import parse, verify
    if tags and (m := list(_TAG.finditer(response))):
        response = m[-1].group(1)
    return bool(verify(parse("\\boxed{" + gold + "}"), parse(response)))


def measure(items, show=0, out=sys.stdout):
    """Grade every item with nanorlsp and Math-Verify; print tables; return the summary."""
    from nanorlsp.verifier import grade
    logging_off()
    rows, t_ours, t_mv = [], 0.0, 0.0
    for it in items:
        t = time.perf_counter()
        ours = grade(it["response"], it["gold"])
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        mv = math_verify_grade(it["response"], it["gold"])
        t_mv += time.perf_counter() - t
        mv_tags = mv if "<answer>" not in it["response"] else \
            math_verify_grade(it["response"], it["gold"], tags=True)
        rows.append((it, ours, mv, mv_tags))
    by_kind = collections.defaultdict(lambda: [0, 0, 0])
    for it, ours, mv, mv_tags in rows:
        for key in (it["kind"], "all") + (() if it["source"].startswith("model output") else
                                         ("all but the model-output items",)):
            by_kind[key][0] += ours == mv
            by_kind[key][1] += ours == mv_tags
            by_kind[key][2] += 1
    print(f"{'kind':<18} {'items':>6} {'agree':>7} {'agree, tags':>12}", file=out)
    for kind, (agree, agree_t, n) in sorted(by_kind.items(),
                                            key=lambda kv: (kv[0].startswith("all"), kv[0])):
        print(f"{kind:<18} {n:>6} {100 * agree / n:6.2f}% {100 * agree_t / n:11.2f}%", file=out)
    print("(agree: Math-Verify parses the whole reply; agree, tags: the <answer> tag's content "
          "when there is one)", file=out)
    rows = [r[:3] for r in rows]
    # against what each item was built to be (rewrites True, perturbations False)
    labelled = [(it, o, m) for it, o, m in rows if it["intended"] is not None]
    acc_o = sum(o == it["intended"] for it, o, m in labelled) / len(labelled)
    acc_m = sum(m == it["intended"] for it, o, m in labelled) / len(labelled)
    print(f"against the intended verdict ({len(labelled)} items): nanorlsp {100 * acc_o:.2f}%, "
          f"Math-Verify {100 * acc_m:.2f}%", file=out)
    print(f"time: nanorlsp {t_ours:.1f} s, Math-Verify {t_mv:.1f} s", file=out)
    dis = [(it, o, m) for it, o, m in rows if o != m]
    forms = collections.Counter((it["form"], o, it["intended"], read_differently(it))
                                for it, o, m in dis)
    print(f"disagreements by form: {len(dis)} (read: the two graders extracted different "
          f"answers; same: same answer, compared differently)", file=out)
    for (form, o, intended, read), c in forms.most_common():
        print(f"  {c:4d}  {form:<32} ours={o!s:<5} intended={intended!s:<5} "
              f"{'read' if read else 'same'}", file=out)
    for it, o, m in dis[:show]:
        print("-" * 80, file=out)
        print(f"[{it['kind']} / {it['form']}] ours={o} math_verify={m} intended={it['intended']}"
              f"\ngold: {it['gold']!r}\nreply: {it['response'][-300:]!r}", file=out)
    return {"n": len(rows), "agree": by_kind["all"][0] / len(rows),
            "agree_tags": by_kind["all"][1] / len(rows), "intended": acc_o,
            "by_kind": {k: a / n for k, (a, _, n) in by_kind.items()}, "rows": rows}


def read_differently(item):
    """True if Math-Verify's extracted answer differs from ours (an extraction difference),
    False if both read the same answer and only the comparison differs."""
    from math_verify import parse
    from nanorlsp.verifier import extract_answer, is_equiv
    found = parse(item["response"])
    ours = extract_answer(item["response"])
    if not found or ours is None:
        return bool(found) != (ours is not None) or not found
    theirs = found[-1] if isinstance(found[-1], str) else str(found[-1])
    return not is_equiv(theirs, ours)


def logging_off():
    import logging
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)


def subsample(items, limit, seed=0):
    if limit is None or limit >= len(items):
        return items
    return random.Random(seed).sample(items, limit)


def main():
    ap = argparse.ArgumentParser(description="nanorlsp verifier vs Math-Verify on the corpus.")
    ap.add_argument("--limit", type=int, default=None, help="a seeded subsample of this size")
    ap.add_argument("--show", type=int, default=0, help="print this many disagreements")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed")
    args = ap.parse_args()
    if not available():
        sys.exit(f"{DATA} not found: the corpus needs MATH-500, MATH train, GSM8K and AIME 2024")
    sys.path.insert(0, ROOT)
    items = subsample(build(seed=args.seed), args.limit)
    measure(items, show=args.show)


if __name__ == "__main__":
    main()
