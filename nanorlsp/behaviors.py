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
    if task in MARKERS:
        for b, pat in MARKERS[task].items():
            if pat is not None:
                out += [(*_line(text, m.start()), b) for m in pat.finditer(text)]
        if task == "countdown":  # the first top-level try is the first idea, the rest alternatives
            out += [(*_line(text, m.start()), "alternatives") for m in list(_TOP_TRY.finditer(text))[1:]]
    else:
        out = [(m.start(), m.end(), b) for b, pat in KEYWORDS.items() for m in pat.finditer(text)]
    return sorted(out)
