r"""
The outcome verifier: pull the final answer out of a response and decide if it equals the gold.

    from nanorlsp.verifier import extract_answer, find_answer, is_equiv, grade
    grade("... so the probability is \\boxed{\\dfrac12}.", "0.5")      # True
    grade("So she has 18 apples left.", "18")                         # True: the last number
    find_answer("The answer is $x = 3$.")                              # ('x = 3', 4)

find_answer, first rule that gives an answer wins: the last \boxed{} (adjacent boxes: one list);
the last labelled answer ("Answer:", "the answer is", <answer>, "#### n"); the whole reply when it
is a bare answer; the last math span or the last number, whichever ends later. Only the reply's
own turn is read (up to <|im_end|> and the like). grade(response, gold) = is_equiv(its answer, the
gold's answer); is_equiv (nanorlsp/equivalence.py) says if two answers are the same object.
Footguns: RL maximises whatever grade calls correct, so it must be exact (no false positive for a
policy to farm), fast, and unbreakable: model output is hostile input (bounded linear scans,
nothing executed, grade never raises). The RL reward's "no answer" test and reasoning length read
answer_start, this same extraction. docs/verifier.md has every rule with examples and the numbers.
"""
import re

from nanorlsp.equivalence import (MAX_ANSWER_LEN, MAX_ITEMS, _DECIMAL_COMMA, _INT, _UNIT, _box_span,
                                  _drop_thousands, _top_level_split, _unescape, is_equiv,
                                  last_boxed)
# the caches the verifier benchmark clears, re-exported so `verifier._normalize` keeps working
from nanorlsp.equivalence import _normalize, _parse, _unit  # noqa: F401

SCAN = 10_000          # chars at the end of a reply searched for math spans and numbers

# -----------------------------------------------------------------------------
# Extraction


def _last_box_start(text, end):
    return max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))


# what may stand between boxes (or math spans) that together are one list of answers: some
# separator (a comma, "and", "or", \quad), with spaces and math delimiters around it
_SEP_WORD = r"(?:,|;|&|\\q?quad|\\text\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b)"
_SEP = re.compile(r"(?:\s|\$|\\[,;:! ]|\\[()\[\]])*"
                  r"(?:\((?:for|when|if|where|with)\b[^()\n]{0,30}\)[\s$]*)?"  # "(for $x$)"
                  + _SEP_WORD + r"(?:\s|\$|\\[,;:! ]|\\[()\[\]]|\balso\b|" + _SEP_WORD + ")*"
                  r"(?:[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*)?")  # "$x = \boxed{2}$ or $x = \boxed{5}$"


def _boxed(text):
    i = _last_box_start(text, len(text))
    if i < 0:
        return None
    found = _box_span(text, i, MAX_ANSWER_LEN)
    if not found or not (box := found[0].strip()):
        return None  # an unclosed or empty last box: fall back to the other rules
    if _last_box_start(text, i) < 0:
        return box, i  # the one box of the reply (the RL case)
    items, start = [box], i
    for _ in range(MAX_ITEMS):  # \boxed{4}, \boxed{7}: earlier boxes with only separators between
        j = _last_box_start(text, start)
        prev = _box_span(text, j, MAX_ANSWER_LEN) if j >= 0 else None
        if not prev or not prev[0].strip() or start - prev[1] > 40 or \
                not _SEP.fullmatch(text, prev[1], start):
            break
        items.insert(0, prev[0].strip())
        start = j
    items = list(dict.fromkeys(map(_drop_thousands, items)))  # \boxed{5}, \boxed{5}: one answer
    if len(items) == 1:
        return items[0], start
    # boxes that hold lists themselves are solutions ('\boxed{x=2, y=5} or \boxed{x=5, y=2}')
    grouped = any(len(_top_level_split(x, (",",))) > 1 for x in items)
    return ("; " if grouped else ", ").join(items), start


_TEXT_ARG = re.compile(r"\\(?:text(?:bf|it|rm|normal)?|mbox|math(?:rm|bf|it|sf|bb)|operatorname|"
                       r"begin|end)\s*\{[^{}]*\}")
_WORD_RUN = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")
_STOP2 = {"is", "it", "so", "be", "we", "of", "to", "an", "as", "at", "by", "if", "on", "no",
          "my", "he", "me", "us", "am", "do", "go", "up", "the"}
_MATH_WORDS = {"and", "or", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt",
               "pi", "mod", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "inf"}
_VALUE_THEN_WORDS = re.compile(r"[^a-zA-Z]*\d[^a-zA-Z]*(?:[a-zA-Z]+\.?[\s/]*){1,3}[.,]?")


def _bare(s):
    """True if `s` reads as an answer by itself: a formula, a number and its unit, a word."""
    s = s.strip()
    if not s or len(s) > 200 or "\n" in s or "\\boxed" in s or "\\fbox" in s:
        return False
    t = _TEXT_ARG.sub(" ", s)  # \text{...} holds units and names, not prose
    words = [w for w in _WORD_RUN.findall(t) if (len(w) > 2 or w.lower() in _STOP2)
             and w.lower() not in _MATH_WORDS and not _UNIT.fullmatch(w)]
    if not words:
        return True
    if len(s.split()) <= 2 and re.fullmatch(r"[A-Za-z][A-Za-z' -]*\.?", s):
        return True  # Evelyn, east, New York
    # 18 apples, 5 square feet; but not "7 is the answer"
    return bool(_VALUE_THEN_WORDS.fullmatch(t)) and not any(w.lower() in _STOP2 for w in words)


_LIST_WORD = re.compile(r"\b(?:and|or)\b|\\q?quad|;")


def _cut(ans):
    r"""A computation's result: `\binom{6}{3} = 20` -> 20, `x = 2 + 3 = 5` -> 5; `x = 5` stays."""
    if "=" not in ans:
        return ans
    ans = _drop_thousands(ans)  # 1,250 + 300 = 1,550
    parts = _top_level_split(ans, ("=",))
    if len(parts) < 2 or any(not p.strip() for p in parts) or _LIST_WORD.search(ans) or \
            len(_top_level_split(ans, (",",))) > 1 or \
            any(p.rstrip().endswith(("<", ">", "!", "\\le", "\\ge")) for p in parts[:-1]):
        return ans  # a list, or a relation that is not an equation chain
    lhs = re.sub(r"\\[a-zA-Z]+", "", parts[0])
    if len(parts) > 2 or not re.search(r"[a-zA-Z]", lhs):
        return parts[-1].strip()
    return ans


_SPAN = re.compile(r"\$\$(.{1,%d}?)\$\$|\\\[(.{1,%d}?)\\\]|\\\((.{1,%d}?)\\\)|"
                   r"(?<!\\)\$((?:\\\$|[^$\n]){1,%d}?)(?<!\\)\$"
                   % ((MAX_ANSWER_LEN,) * 4), re.S)
_LETTER_AFTER = re.compile(r"[a-zA-Z]")
_SINGLE_SYMBOL = re.compile(r"\s*(?:[a-zA-Z]|\\(?:alpha|beta|gamma|theta|phi|lambda|mu))\s*")


def _spans(text, lo, prose=False):
    """Math spans of text[lo:] as (content, start, end), content stripped; currency pairs
    ('$5 and $6') and (unless prose=True) prose are left out."""
    out = []
    for m in _SPAN.finditer(text, lo):
        body = next(g for g in m.groups() if g is not None)
        if m.group(4) is not None and body[-1:].isspace() and \
                text[m.end():m.end() + 1].isalnum():
            continue  # "$5 and $6": dollars, not math
        body = body.strip()
        if body and (prose or _bare(body)):
            out.append((body, m.start(), m.end()))
    return out


def _join_spans(text, spans, k, step):
    """Span k joined with its neighbours (step -1: before it, +1: after it) when only
    separators stand between: 'the roots are $2$ and $3$' -> '2, 3'."""
    items, first, last = [spans[k][0]], k, k
    while 0 <= first + step < len(spans) and 0 <= last + step < len(spans) and \
            len(items) < MAX_ITEMS:
        n = first + step if step < 0 else last + step
        a, b = (spans[n][2], spans[first][1]) if step < 0 else (spans[last][2], spans[n][1])
        if b - a > 40 or not _SEP.fullmatch(text, a, b):
            break
        if step < 0:
            items.insert(0, spans[n][0])
            first = n
        else:
            items.append(spans[n][0])
            last = n
    if len(items) > 1:  # '$1,250$ and $3,500$': two numbers, not four
        items = [_drop_thousands(x) for x in items]
    return ", ".join(_cut(x) for x in items), spans[first][1]


# a number in text: \frac{3}{4}, 1/2, 1,234.5, 1 234, 250,75, .5, 35% (never the 00 of 2:00)
_NUMBER = re.compile(r"(?<![\w.\\])(?<!\d:)-?(?:\\[dt]?frac\{-?\d+(?:\.\d+)?\}\{-?\d+(?:\.\d+)?\}|"
                     r"\d+(?:\.\d+)?\s*/\s*\d+(?:\.\d+)?(?![\d.]*\s*/)|"
                     r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d{1,3}(?: \d{3})+(?![\d,])(?:\.\d+)?|"
                     r"\d+(?:[.,]\d+)?|\.\d+)"
                     r"(?:\s*(?:\\?%|percent\b|pct\b))?")


def _prose_number(ans):
    """An answer written in prose, outside math: '3,75' there is a decimal comma ('La respuesta
    es 3,75', 'Answer: 0,25'); inside math or a box a bare '1,2' stays a list."""
    return ans.replace(",", ".") if _DECIMAL_COMMA.fullmatch(ans) else ans


def _window(text):
    """Where the bounded scan of the reply's end starts: a line start when one is near."""
    lo = max(0, len(text) - SCAN)
    if lo:
        nl = text.rfind("\n", lo - 200, lo)
        lo = nl + 1 if nl >= 0 else lo
    return lo


def _free(text, lo=None):
    """Rules 4 and 5: the last math span or the last number of text[lo:], whichever ends later
    (a number inside the span is the span's); a span that is one symbol ('let $x$ be') is a name,
    not an answer."""
    lo = _window(text) if lo is None else lo
    spans = [s for s in _spans(text, lo) if not (_SINGLE_SYMBOL.fullmatch(s[0]) and
                                                  _LETTER_AFTER.search(text, s[2]))]
    num = None
    for m in _NUMBER.finditer(text, lo):
        num = m
    if spans and (num is None or num.start() < spans[-1][2]):
        return _join_spans(text, spans, len(spans) - 1, -1)
    return (_prose_number(num.group(0)), num.start()) if num else None


_AFTER_LABEL = re.compile(r"[* \t]*(?:\((?:s|final)\))?[* \t]*(?::|is\b|=)[*: \t]*")
_SENTENCE_END = re.compile(r"[.!?;](?:\s|$)|,\s+(?=[a-zA-Z]{3,})")


_VERB = re.compile(r"\s(?:is|are|equals|was|were|will be|would be)\s+")
_CAUSE = re.compile(r"\s(?:because|since|(?:and|but) (?:I|we|it|this))\s")  # where a clause ends


def _after_subject(line):
    """Where the answer starts in a sentence that names it before a verb ('The smallest $k$ is
    17', 'The remainder when $2^{100}$ is divided by 7 is 2', lm-eval's Minerva closings):
    after the sentence's last verb outside math, the sentence ending at the first clause break
    after its first verb ('The value is 7, which is prime') and before 'because', 'since', 'and
    I' ('The answer is $6$ and I hope it is correct').
    None when the subject is an answer itself ('42 is the answer')."""
    m = re.search(r"[.!?;](?:\s|$)", line)
    sentence = line[:m.start()] if m else line
    spans = [(a, b) for _, a, b in _spans(sentence, 0, prose=True)]
    verbs = [v for v in _VERB.finditer(sentence) if not any(a <= v.start() < b for a, b in spans)]
    if not verbs:
        return None
    m = _SENTENCE_END.search(sentence, verbs[0].end())
    end = m.start() if m else len(sentence)
    if (c := _CAUSE.search(sentence, 0, end)) is not None:
        end = c.start()
    inside = [v for v in verbs if v.end() <= end]
    if not inside:
        return None
    subject = sentence[:inside[0].start()]
    if _bare(subject) and re.search(r"[\d$]", subject):
        return None
    return inside[-1].end()


def _tail(text, pos, subject=True):
    """The answer written after a label that ends at text[pos], or None."""
    seg = text[pos:pos + MAX_ANSWER_LEN + 200].lstrip(" \t")
    next_line = seg.startswith(("\n", "\r"))  # "Answer:\n\n42", "here is how to find the answer:\n"
    seg = seg.lstrip()
    for open_, close in (("$$", "$$"), ("\\[", "\\]")):  # "Answer:\n$$ 5 $$"
        if seg.startswith(open_):
            end = seg.find(close, 2)
            if end > 2 and seg[2:end].strip():
                return _cut(seg[2:end].strip())
    line = seg.split("\n", 1)[0]
    if next_line and (not _bare(line) or re.match(r"\d+[.)]\s", line)):
        return None  # a list of steps after the label: not an answer
    if subject and (k := _after_subject(line)) is not None and (ans := _tail(line, k, False)):
        return ans
    spans = _spans(line, 0, prose=True)  # "Answer: $Softball, Kickball$" is an answer
    if spans and not any(c.isdigit() for c in line[:spans[0][1]]):
        return _join_spans(line, spans, 0, +1)[0]
    m = _SENTENCE_END.search(line)
    sentence = (line[:m.start()] if m else line).strip(" *\t").rstrip(".")
    if spans and spans[0][1] < len(sentence):
        sentence = sentence[:spans[0][1]]
    if _bare(sentence):
        return _prose_number(_cut(sentence))
    head = sentence[sentence.rfind("=") + 1:] if "=" in sentence else sentence
    num = _NUMBER.search(head)
    return _prose_number(num.group(0)) if num else None


def _labelled(text):
    """Rule 2: the last labelled answer, as (answer, index of its label)."""
    low = text.lower()  # one linear pass; the labels are then found with rfind
    best, k = None, len(low)
    for _ in range(20):  # the last few "answer" words of the reply
        k = low.rfind("answer", 0, k)
        if k < 0:
            break
        if k >= 2 and low.startswith("</", k - 2):
            continue
        if k >= 1 and low.startswith("<answer>", k - 1):  # <answer> ... </answer>
            body_end = low.find("</answer>", k + 7, k + 7 + MAX_ANSWER_LEN)
            body = text[k + 7:body_end if body_end >= 0 else k + 7 + MAX_ANSWER_LEN]
            found = _boxed(body) or _whole(body) or _free(body, 0)
            if found:
                best = (found[0], k - 1)
                break
            continue
        m = _AFTER_LABEL.match(low, k + 6)
        if m and (ans := _tail(text, m.end())):
            best = (ans, k)
            break
    h = text.rfind("####")
    if h >= 0 and (best is None or h > best[1]):
        ans = _tail(text, h + 4)
        if ans:
            best = (ans, h)
    return best


def _whole(text):
    """Rule 3: the reply is a bare answer itself ('42', 'x = 3', '\\frac12', 'Evelyn')."""
    s = text.strip()
    if _bare(s):
        return _cut(s), len(text) - len(text.lstrip())
    return None


# end-of-turn tokens of common chat templates: text after one belongs to another turn
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "<|end|>",
                "<end_of_turn>", "</s>", "<\uff5cend\u2581of\u2581sentence\uff5c>")
_END_OF_TURN_RE = re.compile("|".join(map(re.escape, _END_OF_TURN)))
# a model that goes on with a few-shot prompt's next item after its answer
_NEXT_PROBLEM = re.compile(r"\n[ \t]*(?:#+ *|\*\*)?(?:Problem|Question|Q|Human|User)(?:\*\*)? *:")


def _own_turn(text):
    """The reply up to its first end-of-turn token (one before any text does not count)."""
    if "<" not in text:  # the RL case: no template token at all
        return text
    m = _END_OF_TURN_RE.search(text, len(text) - len(text.lstrip()) + 1)
    return text[:m.start()] if m else text


def find_answer(response: str) -> tuple[str, int] | None:
    r"""(the final answer, the index in `response` where it starts), or None. Rules, first hit
    wins: last \boxed{} / \fbox{} (adjacent boxes: one list), else the last labelled answer
    ('Answer:', 'the answer is', <answer>, '####'), else the whole reply when it is a bare
    answer, else the last math span, else the last number; all in the reply's own turn (up to
    an end-of-turn token such as <|im_end|>), and before a few-shot prompt's next problem when
    the text before it has a boxed or labelled answer. The one extraction the grader and the
    RL reward share: the reward's "no answer" test and its reasoning length L (the text before
    the answer) come from this same call."""
    if not isinstance(response, str) or not response.strip():
        return None
    response = _own_turn(response)  # a template's next turn is not the answer
    if (m := _NEXT_PROBLEM.search(response)) is not None:  # '... I hope it is correct.\n\nProblem:'
        head = response[:m.start()]
        if found := _boxed(head) or _labelled(head):
            return found
    return _boxed(response) or _labelled(response) or _whole(response) or _free(response)


def extract_answer(response: str) -> str | None:
    r"""The final answer find_answer extracts (see there), or None."""
    found = find_answer(response)
    return None if found is None else found[0]


def answer_start(response: str) -> int | None:
    """Where the final answer find_answer extracts begins (None: no answer)."""
    found = find_answer(response)
    return None if found is None else found[1]


_DELIM = re.compile(r"(?<!\\)\$|\\\(|\\\[|####|answer", re.I)


def _gold_answer(gold):
    """The gold's answer: the gold itself when it is a bare answer, else its extraction (a
    sentence, a boxed solution, 'The answer is $5$')."""
    if _INT.fullmatch(gold) or len(gold) > 20 * MAX_ANSWER_LEN:
        return gold
    gold = _unescape(gold)
    if "\\boxed" in gold or "\\fbox" in gold or _DELIM.search(gold) or not _bare(gold):
        found = find_answer(gold)
        return found[0] if found else gold
    return gold

# -----------------------------------------------------------------------------
# Grading


def grade(response: str, gold: str) -> bool:
    """True if the response's final answer (find_answer) equals the gold answer (itself
    extracted when it is a sentence or a boxed solution)."""
    try:
        if isinstance(gold, int) and not isinstance(gold, bool):
            gold = str(gold)
        if not isinstance(gold, str):
            return False
        found = find_answer(response)
        return found is not None and is_equiv(found[0], _gold_answer(gold))
    except Exception:
        return False
