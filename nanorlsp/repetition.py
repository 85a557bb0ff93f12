"""
The repetition guard of the RLSP reward: R, the reasoning tokens that only repeat earlier text.

    pieces = token_pieces(tok)                     # once: every token's bytes (where lines end)
    R = repeated_tokens(reason_ids, 8, pieces)     # rewards.score: L = T - R, -rep_coef * R / T

R is counted on lines (line_verdicts), not on n-grams: an 8-gram guard counts a search's own
vocabulary as repetition (countdown's distinct search lines share most of their tokens: "try
17*3=51 -> [5, 51]", "try 17*5=85 -> [3, 85]", "backtrack"), so the total reward fell as a
correct search got longer. On lines, a search's distinct steps are new, its "backtrack"s and the
leaves of a state it reaches by a second path are revisits (free), and a repeated line, a copied
block, a loop of one state and whitespace-only variants repeat; every SFT demonstration of both
tasks scores R = 0 (tests/test_rewards.py). Lines come from the token pieces (a token holding a
newline ends one); without pieces, R falls back to the plain n-gram count (loop_tokens).
Measurements: docs/rl.md.
"""
from collections import Counter

WHITESPACE = b" \t\r\n\f\v"


def token_pieces(tok) -> list[bytes]:
    """pieces[id] = the bytes of token id, for every id of tok: the table score(pieces=...) reads
    the line structure from (which tokens end a line, which bytes are whitespace). Build it once
    per tokenizer; it is what lets the guard work on ids alone."""
    return [tok.decode_bytes([i]) for i in range(tok.n_vocab)]


def loop_tokens(ids: list[int], n: int) -> int:
    """How many of ids only repeat an earlier n-gram of ids: a token counts once it closes an
    n-gram already seen. A run of T tokens repeating a period p costs T - p - (n - 1): all but
    the first copy and the n - 1 tokens it takes to recognise the second. Linear time."""
    seen, rep = set(), 0
    for i in range(n, len(ids) + 1):
        g = tuple(ids[i - n:i])
        if g in seen:
            rep += 1
        else:
            seen.add(g)
    return rep


class _Line:
    """An open line of line_verdicts: depth, content, verdict, key, q (the content of the
    earlier line it stands for: None = not yet bound, False = none) and used (how often each
    child content was revisited under it)."""
    __slots__ = ("d", "c", "verdict", "key", "q", "used")

    def __init__(self, d, c, verdict, key, q):
        self.d, self.c, self.verdict, self.key, self.q, self.used = d, c, verdict, key, q, {}


def line_verdicts(ids: list[int], pieces) -> list[tuple[int, int, str]]:
    """(start, end, verdict) for every line of ids: "novel", "revisit", "repeat" or "blank".

    A line ends with a token whose piece holds a newline (the last line may not). Its content c
    is its bytes without any whitespace, its depth d the width of its indentation, its parent the
    nearest earlier line of smaller depth (none at the top) and its sibling the previous line of
    the same depth under that parent: the tree a search trace writes (countdown's DFS: a try, its
    children one space deeper, "backtrack" at the try's depth).

      novel    c was never written before. Free.
      revisit  c was, but a search rightly writes it again here. (a) Right after a novel sibling,
               as c once was before: the "backtrack" that closes every new try. (b) Under a line
               that stands for an earlier line q, where c was a child of q, at most as often as
               there: a state reached by a second path is expanded again (countdown's DFS keeps
               no table across branches: [24, 425], from 6*4 then 25*17 and from 25*17 then 6*4,
               lists its leaves twice). A novel line stands for the last parent of its first
               revisited child; a (b) revisit for itself. Never with the same (d, parent, sibling,
               c) as an earlier line, never a copy of its own sibling, never after a repeat. Free.
      repeat   anything else. All its tokens count; no line after it at its depth is a revisit,
               and no line under it re-expands it (b). So a repeated line, a copied block
               (re-indented, re-spaced or not) and a loop of one state repeat from their first
               or second line on.
      blank    no content (empty or whitespace only). All its tokens count.

    What it cannot tell from a search without checking the search: an earlier line re-written
    right after a new one (case a), and an earlier line's children re-listed under a new line
    (case b). Each needs a new line to hang from, and a copy of the copy repeats. Linear time."""
    seen, keys, closers = set(), set(), set()   # contents; keys; contents once after a novel sibling
    kids, last_parent = Counter(), {}           # (parent c, c) -> how often; c -> last parent's c
    stack = []                                  # the open lines, depths strictly increasing
    out, start = [], 0
    for end, t in enumerate(ids, 1):
        if b"\n" not in pieces[t] and end < len(ids):
            continue                                          # ids[start:end] is not a line yet
        raw = b"".join(pieces[i] for i in ids[start:end])
        c = raw.translate(None, WHITESPACE)
        if not c:
            out.append((start, end, "blank"))
            start = end
            continue
        d = len(raw) - len(raw.lstrip(WHITESPACE))
        while stack and stack[-1].d > d:
            stack.pop()                                       # close the deeper lines
        sib = stack.pop() if stack and stack[-1].d == d else None
        par = stack[-1] if stack else None
        key = hash((d, par and par.key, sib and sib.c, c))    # the parent's key: a whole path
        q = False
        if c not in seen:
            verdict, q = "novel", None
        elif key in keys or (sib and (sib.c == c or sib.verdict == "repeat")):
            verdict = "repeat"
        elif sib and sib.verdict == "novel" and c in closers:
            verdict = "revisit"                               # (a): stands for nothing
        elif par and par.q is not False:
            pq = par.q if par.q is not None else last_parent.get(c)
            if pq is not None and par.used.get(c, 0) < kids[pq, c]:
                verdict, q = "revisit", c                     # (b)
                par.q = pq
                par.used[c] = par.used.get(c, 0) + 1
            else:
                verdict = "repeat"
        else:
            verdict = "repeat"
        seen.add(c)
        keys.add(key)
        if sib and sib.verdict == "novel":
            closers.add(c)
        if par:
            kids[par.c, c] += 1
            last_parent[c] = par.c
        stack.append(_Line(d, c, verdict, key, q))
        out.append((start, end, verdict))
        start = end
    return out


def repeated_tokens(ids: list[int], n: int, pieces=None) -> int:
    """R, the reasoning tokens that only repeat earlier text (see score). With pieces
    (token_pieces(tok)): every token of a repeat or blank line (line_verdicts), plus, inside the
    other lines, loop_tokens(line, n), a loop that never writes a newline. Without pieces the
    lines are unknown and the reasoning is one line: loop_tokens(ids, n), the plain n-gram guard,
    which also counts the shared vocabulary of a search's distinct lines (countdown's "no /
    backtrack / try") as repetition."""
    if pieces is None:
        return loop_tokens(ids, n)
    return sum(e - s if v in ("repeat", "blank") else loop_tokens(ids[s:e], n)
               for s, e, v in line_verdicts(ids, pieces))
