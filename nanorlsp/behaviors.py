"""
Counting the behaviours RLSP reports as emergent: backtracking, verification, and exploring
alternatives (Ye et al. 2025, section 5; counted per response, plotted over RL steps).

    from nanorlsp.behaviors import detect, frequencies
    detect("...\\nwait, 7+9=16 not 15. redo:\\n...", task="arith")
        # {"backtracking": True, "verification": False, "alternatives": False}
    frequencies(responses, task="gsm8k")   # fraction of responses showing each behaviour
    spans(text, task="arith")              # [(start, end, behaviour)]: where, for highlighting

Two kinds of evidence:
- Synthetic tasks (arith, countdown) write their behaviours as exact line markers, so counts are
  exact, not guesses. arith: a line starting "wait," is a caught mistake (backtracking), a line
  starting "check:" is verification; arith's demonstrations have no alternative strategies, so
  "alternatives" is never counted there. countdown: a line that is exactly "backtrack" (any
  indent) undoes a search step, "check:" verifies the found expression, and trying two or more
  different first moves (two top-level "try" lines) is exploring alternatives.
- Natural text (gsm8k, math500, aime24, anything else): the keyword patterns below, the kind
  published analyses use. They are a proxy: "wait" also appears in word problems. A response
  counts once per behaviour however many times the pattern matches.
"""
import re
from fractions import Fraction

BEHAVIORS = ("backtracking", "verification", "alternatives")

# exact markers of the synthetic tasks (multiline regexes over the response)
MARKERS = {
    "arith": {
        "backtracking": re.compile(r"^wait,", re.M),
        "verification": re.compile(r"^check:", re.M),
        "alternatives": None,
    },
    "countdown": {
        "backtracking": re.compile(r"^\s*backtrack\s*$", re.M),
        "verification": re.compile(r"^check:", re.M),
        "alternatives": None,  # counted from top-level "try" lines, see _count
    },
}

# a task that writes another's traces reads with its markers and detectors (data/countdown_small.py:
# countdown on smaller numbers)
SAME_TRACES = {"countdown_small": "countdown"}

# keyword patterns for natural-language reasoning (case-insensitive, word-bounded)
KEYWORDS = {
    "backtracking": re.compile(
        r"\b(wait\b|hold on\b|oops\b|i made (a|an) (mistake|error)|that('s| is| was) "
        r"(wrong|incorrect|not right)|let me (re-?do|re-?think|re-?calculate|reconsider|correct)"
        r"|scratch that|on second thought)", re.I),
    "verification": re.compile(
        r"\b(let me (check|verify|double[- ]check)|let's (check|verify|double[- ]check)"
        r"|to (check|verify|confirm)\b|checking\b|verif(y|ying|ication)\b|sanity check"
        r"|plug(ging)? (it|this|these|that)? ?back|substitut(e|ing) back|double[- ]check)", re.I),
    "alternatives": re.compile(
        r"\b(alternatively|another (approach|way|method|idea)|a different (approach|way|method)"
        r"|let('s| us| me) try (another|a different|something else)|instead,? (let|we|i) "
        r"|on the other hand)", re.I),
}

_TOP_TRY = re.compile(r"^try ", re.M)  # countdown: a first move (depth 0 lines are unindented)


def _count(text: str, task: str | None) -> dict[str, int]:
    """Occurrences of each behaviour's marker (synthetic tasks) or keyword (natural text)."""
    task = SAME_TRACES.get(task, task)
    if task in MARKERS:
        out = {}
        for b, pat in MARKERS[task].items():
            out[b] = len(pat.findall(text)) if pat is not None else 0
        if task == "countdown":
            out["alternatives"] = max(0, len(_TOP_TRY.findall(text)) - 1)
        return out
    return {b: len(pat.findall(text)) for b, pat in KEYWORDS.items()}


def counts(text: str, task: str | None = None) -> dict[str, int]:
    """How many times each behaviour occurs in one response."""
    return _count(text, task)


def detect(text: str, task: str | None = None) -> dict[str, bool]:
    """Whether one response shows each behaviour."""
    return {b: n > 0 for b, n in _count(text, task).items()}


def frequencies(texts: list[str], task: str | None = None) -> dict[str, float]:
    """Fraction of responses that show each behaviour (INTERFACES.md's eval `behaviors`)."""
    if not texts:
        return {b: 0.0 for b in BEHAVIORS}
    hits = [detect(t, task) for t in texts]
    return {b: sum(h[b] for h in hits) / len(texts) for b in BEHAVIORS}


def _line(text: str, start: int) -> tuple[int, int]:
    """The (start, end) of the line a marker match begins on (a match may begin on the newline
    before it: the markers' regexes allow leading whitespace)."""
    while start < len(text) and text[start] in "\r\n":
        start += 1
    end = text.find("\n", start)
    return start, len(text) if end < 0 else end


def spans(text: str, task: str | None = None) -> list[tuple[int, int, str]]:
    """Where each behaviour occurs in one response: (start, end, behaviour) character spans,
    sorted, one per occurrence that `counts` counts. A synthetic task's marker spans its whole
    line; a keyword spans the matched words. For highlighting transcripts (notebook 05)."""
    out = []
    task = SAME_TRACES.get(task, task)
    if task in MARKERS:
        for b, pat in MARKERS[task].items():
            if pat is not None:
                out += [(*_line(text, m.start()), b) for m in pat.finditer(text)]
        if task == "countdown":  # the first top-level try is the first idea, the rest alternatives
            out += [(*_line(text, m.start()), "alternatives") for m in list(_TOP_TRY.finditer(text))[1:]]
    else:
        out = [(m.start(), m.end(), b) for b, pat in KEYWORDS.items() for m in pat.finditer(text)]
    return sorted(out)


# -----------------------------------------------------------------------------
# Functional detection (no markers): what a reply *does* with the results it wrote, so a
# behaviour can be counted in a model that was never shown its marker (the study's emergence
# test: SFT on direct and plain-step traces only, then RL).
#
# arith: every "a op b ... = r" the reply writes is read. A column step ("8+8+1=17: 767 carry 1")
# is located by its partial answer's length. Going back to a column already written and writing
# a *different* result is backtracking (a revised digit); writing the same result again, or an
# equation outside the steps (e.g. a check) that recomputes one already written with the same
# value, is verification (a recomputed result); starting over from the first column with a
# different first step is an alternative route.
# countdown: every "a op b = c" is applied to the numbers in play, from the problem's numbers: a
# move whose operands are not both in play now but are in an earlier state returns to that state
# (backtracking); more than one distinct move from the starting numbers is exploring
# alternatives; a whole expression (two operators or more) evaluated to a value a move already
# reached is verification.

_EQ = re.compile(r"(\d+(?:\s*[-+*/]\s*\d+)+)\s*=\s*(-?\d+)")
_STEP = re.compile(r"^\s*(\d+(?:\s*[-+*]\s*\d+)+)\s*=\s*(-?\d+)(?:,\s*\+10\s*=\s*\d+)?:\s*(\d+)", re.M)


def _norm(expr: str) -> str:
    return re.sub(r"\s+", "", expr)


def _functional_arith(text: str) -> dict[str, int]:
    out = dict.fromkeys(BEHAVIORS, 0)
    by_col: dict[int, list[tuple[str, str]]] = {}      # column -> [(expr, result)] so far
    latest: dict[str, str] = {}                        # expr -> its latest step's result
    col_max, first = 0, None
    steps = list(_STEP.finditer(text))
    ends = [(m.start(), m.end()) for m in steps]
    events = sorted([(m.start(), "step", m) for m in steps]
                    + [(m.start(), "eq", m) for m in _EQ.finditer(text)
                       if not any(a <= m.start() < b for a, b in ends)], key=lambda x: x[0])
    for _, kind, m in events:
        expr, res = _norm(m.group(1)), m.group(2)
        if kind == "eq":                # outside the column steps (a check, a note), against
            if expr in latest:          # the latest step that computed the same expression
                out["verification" if latest[expr] == res else "backtracking"] += 1
            continue
        col = len(m.group(3))
        if col == 1:
            if first is not None and col_max >= 1 and expr != first:
                out["alternatives"] += 1               # a second route from the first column
            if first is None:
                first = expr
        if col <= col_max and col in by_col:           # back to a column already written
            if any(e == expr and r != res for e, r in by_col[col]):
                out["backtracking"] += 1
            elif any(e == expr and r == res for e, r in by_col[col]):
                out["verification"] += 1
        by_col.setdefault(col, []).append((expr, res))
        latest[expr] = res
        col_max = max(col_max, col)
    return out


_CD_MOVE = re.compile(r"(?<![\d)(+\-*/])(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(-?\d+)")
_CD_EXPR = re.compile(r"([\d(][\d()+\-*/ ]*[\d)])\s*=\s*(-?\d+)")


def _functional_countdown(text: str, numbers: list[int]) -> dict[str, int]:
    out = dict.fromkeys(BEHAVIORS, 0)
    stack, first_moves = [sorted(Fraction(n) for n in numbers)], set()
    moves = list(_CD_MOVE.finditer(text))
    for m in moves:
        a, op, b, c = (Fraction(m.group(1)), m.group(2), Fraction(m.group(3)),
                       Fraction(m.group(4)))

        def rest_of(state):
            rest = list(state)
            for x in (a, b):
                if x not in rest:
                    return None
                rest.remove(x)
            return rest
        fits = [d for d in range(len(stack) - 1, -1, -1) if rest_of(stack[d]) is not None]
        # the reply's own "-> [numbers]" after a move says which state it left (when a number
        # is in play in several states); else the deepest state that holds both operands
        claimed = re.match(r"\s*->\s*\[([^\]]*)\]", text[m.end():])
        if claimed and fits:
            try:
                after = sorted(Fraction(x) for x in claimed.group(1).split(",") if x.strip())
            except ValueError:
                after = None
            fits = [d for d in fits if sorted(rest_of(stack[d]) + [c]) == after] or fits
        depth = fits[0] if fits else None
        if depth is None:
            continue                                   # not a move on any state in play
        if depth < len(stack) - 1:
            out["backtracking"] += 1                   # returns to an earlier state
            del stack[depth + 1:]
        if depth == 0:
            first_moves.add((min(a, b), max(a, b), op) if op in "+*" else (a, b, op))
        stack.append(sorted(rest_of(stack[depth]) + [c]))
    out["alternatives"] = max(0, len(first_moves) - 1)
    # a whole expression (two operators or more) evaluated to a value the reply already wrote
    for m in _CD_EXPR.finditer(text):
        if len(re.findall(r"[-+*/]", m.group(1))) >= 2 and any(
                x.start() < m.start() and Fraction(x.group(4)) == Fraction(m.group(2))
                for x in moves):
            out["verification"] += 1
    return out


def functional(text: str, task: str, numbers: list[int] | None = None) -> dict[str, int]:
    """Counts of each behaviour read from what the reply does, not from markers (above):
    task 'arith', or 'countdown' with the problem's starting numbers."""
    task = SAME_TRACES.get(task, task)
    if task == "arith":
        return _functional_arith(text)
    if task == "countdown":
        if numbers is None:
            raise ValueError("countdown's functional detection needs the problem's numbers")
        return _functional_countdown(text, numbers)
    raise ValueError(f"functional detection knows arith and countdown, not {task!r}")
