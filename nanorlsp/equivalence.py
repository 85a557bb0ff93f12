r"""
Answer equivalence: are two answer strings the same mathematical object?

    from nanorlsp.equivalence import is_equiv       # also importable from nanorlsp.verifier
    is_equiv("0.5", "\\frac12")                     # True: exact rationals
    is_equiv("t \\geq 2", "[2, \\infty)")           # True: the same set of reals
    is_equiv("(1, 2)", "\\{1, 2\\}")                # False: a tuple is never a set

Cheapest first: equal strings; two integers; equal normalised strings; two plain numbers as exact
Fractions; else both sides are parsed (our own tokenizer and recursive-descent parser build
unevaluated sympy objects) and compared: exactly as rationals when both are, else with mpmath at
50 digits at N_POINTS points per free symbol drawn from the pair itself: |a - b| <= tol max(|a|,
|b|), tol = REL_TOL (REL_TOL_DECIMAL when a side has a decimal), no absolute tolerance.
Footguns: nothing from an answer is ever executed (sympy's sympify / parse_expr / parse_latex call
eval, so they are never used); every step is bounded by the MAX_* limits below (no simplify, no
timer, so it works off the main thread); is_equiv returns a bool and never raises. Identities that
hold for positive reals count as equal (\sqrt{x^2} = x). docs/verifier.md has every rule.
"""
import contextvars
import functools
import math
import random
import re
from fractions import Fraction

import mpmath
import sympy
from sympy import Add, Integer, Mul, Pow, Rational, S, Symbol

MAX_ANSWER_LEN = 1000  # chars; no real final answer is this long
MAX_DIGITS = 60        # longest numeric literal the parser accepts
MAX_DEPTH = 100        # parser recursion budget (groups, fractions, powers, signs)
MAX_EXP = 10_000       # largest |exponent| or |function argument| ever evaluated
MAX_BITS = 100_000     # largest exact rational (numerator + denominator bits)
MAX_ITEMS = 64         # elements of a tuple, set or matrix
N_POINTS = 3           # evaluation points for expressions with free symbols (drawn per pair)
REL_TOL, REL_TOL_DECIMAL = 1e-12, 1e-6  # relative only: 0 != e^{-100}
TINY = 1e-30           # below this a 50-digit value may be a zero's rounding noise: re-evaluated
MIN_ROUNDED_DIGITS = 4  # significant digits a decimal needs to stand for a rounded exact value
_MP = mpmath.MPContext()  # private context: our precision never touches the global mpmath.mp
_MP.dps = 50

# -----------------------------------------------------------------------------
# LaTeX text: brace groups, top-level splits, thousands, double escapes (extraction's too)


def _group(text, j, limit):
    """(content, end) of the brace group opening at text[j] == '{', scanning at most `limit`
    chars; None when it never closes (a truncated answer is no answer)."""
    stop = len(text) if limit is None else min(len(text), j + limit + 2)
    k = text.find("}", j + 1, stop)
    if k >= 0 and text.find("{", j + 1, k) < 0:  # no inner braces: the RL case, \boxed{42}
        return text[j + 1:k], k + 1
    depth = 0
    for k in range(j, stop):
        c = text[k]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1:k], k + 1
    return None


def _box_span(text, i, limit):
    r"""(content, end) of the \boxed / \fbox command at text[i], or None."""
    j = i + (6 if text.startswith("\\boxed", i) else 5)
    if j < len(text) and text[j] == "{":
        return _group(text, j, limit)
    if j < len(text) and text[j] == " ":  # "\boxed 5": the token after the space
        k = j
        while k < len(text) and text[k] == " " and k - j < 100:
            k += 1
        e = k
        while e < len(text) and not text[e].isspace() and text[e] != "$" and \
                (limit is None or e - k < limit):
            e += 1
        return (text[k:e], e) if e > k else None
    return None


def _box_content(text, i, name_len, limit):
    """Content of the command at text[i] (name_len chars) with one brace argument, or None."""
    j = i + name_len
    if j < len(text) and text[j] == "{":
        found = _group(text, j, limit)
        return found and found[0]
    return None


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} in `text` (balanced braces), or of a bare `\boxed x`.

    Returns None when there is no \boxed, or when its braces never close (a truncated answer is
    no answer). Linear time, no regex backtracking: model output is untrusted input.
    """
    i = text.rfind("\\boxed")
    found = None if i < 0 else _box_span(text, i, None)
    return found and found[0]


def _top_level_split(s, seps):
    """Split s at the strings in `seps` outside {} () []."""
    parts, depth, k, last = [], 0, 0, 0
    while k < len(s):
        c = s[k]
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif depth == 0:
            for sep in seps:
                if s.startswith(sep, k) and not (sep[0] != "\\" and k and s[k - 1] == "\\"):
                    parts.append(s[last:k])
                    k += len(sep)
                    last = k
                    break
            else:
                k += 1
            continue
        k += 1
    return parts + [s[last:]]


_THOUSANDS_IN = re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?:,\d{3})+(?![\d,])")


def _drop_thousands(s):
    """'1,250 + 300 = 1,550' -> '1250 + 300 = 1550': when every comma of s groups the digits of
    a number, s is one expression, not a list (never inside brackets: (1,250) is a point)."""
    if "," not in s or re.search(r"[(\[]|\\\{", s):
        return s
    t = _THOUSANDS_IN.sub(lambda m: m.group(0).replace(",", ""), s)
    return s if "," in t else t


_BACKSLASH_RUN = re.compile(r"\\+")


def _unescape(s):
    r"""LaTeX escaped twice, as JSON-sourced golds carry it (\\frac{1}{2}, a row break \\\\):
    halved when every run of backslashes has an even length and one of two stands before a
    command or an escaped sign (\\$, \\!)."""
    if "\\\\" not in s:
        return s
    runs = _BACKSLASH_RUN.findall(s)
    if any(len(r) % 2 for r in runs) or not re.search(r"(?<!\\)\\\\[a-zA-Z$!,;%{}]", s):
        return s
    return s.replace("\\\\", "\\")


_INT = re.compile(r"[-+]?\d{1,60}")
# unit words (extraction: '18 apples'; normalisation: trailing units are dropped)
_UNIT = re.compile(r"(?:cm|mm|km|m|meters?|metres?|centimet(?:er|re)s?|millimet(?:er|re)s?|"
                   r"kilomet(?:er|re)s?|inch(?:es)?|in|feet|foot|ft|yards?|yd|miles?|mi|mph|"
                   r"kph|km/h|m/s|ft/s|kg|g|grams?|kilograms?|pounds?|lbs?|ounces?|oz|"
                   r"lit(?:er|re)s?|l|ml|cents?|dollars?|euros?|usd|eur|units?|degrees?|"
                   r"square|sq|cubic|cu|seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|"
                   r"weeks?|months?|years?)\.?(?:\^\{?[23]\}?|[²³])?", re.I)

# a comma between digits that is no thousands separator (250,75): in prose, a decimal comma
_DECIMAL_COMMA = re.compile(r"(?<![\d,.])([-+]?\d+),(\d{1,2}|\d{4,})(?![\d,])")

# -----------------------------------------------------------------------------
# String normalisation

_LIST_WORDS = r"(?:\s*,)?\s*\b(?:and|or)\b\s*,?|;"
_UNICODE = str.maketrans({"−": "-", "–": "-", "×": "*", "·": "*", "÷": "/", "π": "\\pi ",
                          "∞": "\\infty ", "√": "\\sqrt", "°": "^\\circ ", "\u2009": " ",
                          "\u00a0": " ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ",
                          "≈": "\\approx ", "±": "\\pm ", "∪": "\\cup ", "∈": "\\in ",
                          "²": "^2", "³": "^3", "€": " ", "£": " ", "¥": " ", "₹": " ",
                          "½": "(1/2)", "⅓": "(1/3)", "⅔": "(2/3)", "¼": "(1/4)", "¾": "(3/4)"})
_TEXT_CMD = re.compile(r"\\(?:text(?:bf|it|rm|normal)?|mbox|math(?:rm|bf|it|sf)|operatorname)"
                       r"\s*\{")
_SUBS = [(re.compile(p), r) for p, r in [
    (r"\\?\$", ""),                                             # math mode, dollars
    (r"(?<!\\)\\[()\[\]]", " "),                                # \( \) \[ \]
    (r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])\s*\.?", ""),  # \left( -> (, \left. -> nothing
    (r"(?<=\d)(?:,\\!|\{,\})\s*(?=\d{3}(?!\d))", ""),           # 10,\!080 and 10{,}080
    (r"(?<=\d)\{,\}(?=\d)", "."),                                # 2{,}5: a decimal comma
    (r"\\!", ""),
    (r"\\q?quad(?![a-zA-Z])", ","),                              # answers set apart: a list
    (r"(?<!\\)\\[,;:> ]|~", " "),                               # spacing (but not \\ + space)
    (r"\\[dtc]frac(?![a-zA-Z])", r"\\frac"),
    (r"\\(?:displaystyle|limits|textstyle)(?![a-zA-Z])", ""),
    (r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])", r" \\degree "),
    (r"(?<=[\d\s}])(?:percent|per cent|pct)\b\.?", "%"), (r"\\%", "%"),
    (r"\\(?:cdot|times|ast)(?![a-zA-Z])", "*"), (r"\\div(?![a-zA-Z])", "/"), (r"\*\*", "^"),
    (r"<=|\\leq?(?:slant)?(?![a-zA-Z])", r" \\le "),
    (r">=|\\geq?(?:slant)?(?![a-zA-Z])", r" \\ge "),
    (r"!=|\\neq?(?![a-zA-Z])", r" \\ne "), (r"\\lt(?![a-zA-Z])", "<"), (r"\\gt(?![a-zA-Z])", ">"),
    (r"_\{(\w+)\}", r"_\1"),                                    # 4210_{5} -> 4210_5
    (r"\\begin\{[pbBvV]?matrix\}|\\begin\{array\}\s*\{[^{}]*\}", r" \\matbegin "),
    (r"\\end\{(?:[pbBvV]?matrix|array)\}", r" \\matend "),
    (r"\\mathbb\{R\}|^all real numbers$", r"(-\\infty,\\infty)"),
    (r"(?<![\\a-zA-Z])(?:inf|infinity|infty)(?![a-zA-Z])", r"\\infty "),
    (r"\\(sin|cos|tan)\s*\^\s*\{?\s*-1\s*\}?", r"\\arc\1 "),      # \sin^{-1} is arcsin
    (r"\\(?:emptyset|varnothing)(?![a-zA-Z])|\\\{\s*\\\}", r"\\emptyset"),
    (r"(?<=\d)\s*(?:\.\.\.|\\[lc]?dots(?![a-zA-Z]))", ""),             # 0.3333...
    (_LIST_WORDS, ","),                                         # "2 and 3", "x<1 or x>2"
    (r"^[\s,]*(?:=|\\approx)?\s*|[\s,\\]*$", ""),               # "= 5", "\approx 8.2", "5,\"
]]
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?|[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?%?")
_RHS_THOUSANDS = re.compile(r"([^,]*(?:=|\\approx)\s*)([-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?)")
_PLAIN_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_GLUED_UNIT = re.compile(r"(?<=\d)(?=(?:cm|mm|km|kg|ml|ft)(?:\^\{?[23]\}?)?$)")  # not 2s: a product
_LETTER = re.compile(r"(?<!\\)(?<![a-zA-Z])[a-zA-Z]")


_NUMBER_WORDS = {w: str(k) for k, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({w: str(10 * k) for k, w in enumerate(
    "thirty forty fifty sixty seventy eighty ninety".split(), 3)})
_SCIENTIFIC = re.compile(r"([-+]?\d+(?:\.\d+)?)[eE]([-+]?\d{1,4})")
_REPEATING = re.compile(r"(\d*)\.(\d*)\\overline\{?(\d{1,20})\}?")


def _repeating(m):
    whole, fixed, rep = m.group(1) or "0", m.group(2), m.group(3)
    q = Fraction(int(whole)) + Fraction(int(fixed or "0"), 10 ** len(fixed)) + \
        Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    return f"({q.numerator}/{q.denominator})"


def _unwrap_text(s):
    r"""\text{..}-like commands: unwrapped at the start, dropped as a unit after a value."""
    for _ in range(100):  # each pass removes one command; answers are short
        m = _TEXT_CMD.search(s)
        inner = _box_content(s, m.start(), m.end() - 1 - m.start(), None) if m else None
        if inner is None:
            return s
        head, tail = s[:m.start()], s[m.end() + len(inner) + 1:]
        if inner.strip(" ,") in ("and", "or"):  # "2 \text{ and } 3", "6, 8\text{, and }10"
            inner = f" {inner} "  # a list word: groups of solutions may be told apart by it
        elif not inner.strip(" ,"):
            inner = "" if head.rstrip().endswith(",") else ","
        elif re.search(r"[\w})\]](?:\s|\\[,;: ]|~)*$", head) and \
                re.fullmatch(r"[A-Za-z .]*", inner):  # a unit after a value: 15\mbox{ cm}^2
            inner, tail = "", re.sub(r"^\s*\^\s*\{?\s*[23]\s*\}?", "", tail)
        s = head + inner + tail
    return s


def _is_unit_word(word, rest):
    """A word to drop after a value: a known unit, or any word after a plain number (apples)."""
    w = word.rstrip(".,")
    if _UNIT.fullmatch(w) and (len(w) > 1 or not _LETTER.search(rest)):
        return True  # a one-letter unit (5 m, 3 s) only after a plain number
    return w.isalpha() and len(w) > 1 and w.lower() not in _WORDS and not _LETTER.search(rest)


_EURO_NUMBER = re.compile(r"([-+]?\d{1,3}(?:(?:\.\d{3})+|(?: \d{3})+)),(\d+)")  # 1.234,56


_ASSIGNMENT = re.compile(r"\s*([a-zA-Z](?:_\{?\w+\}?)?)\s*=\s*([^=,;]+?)\s*")
_GROUP_SEP = re.compile(r";|\b(?:and|or)\b")


def _assignment_groups(s):
    """'x=2, y=5; x=5, y=2' -> '(2, 5), (5, 2)': solutions written as assignments to the same
    names ('or' / 'and' / ';' between them) are a set of tuples, values in the order written."""
    if s.count("=") < 4:
        return s
    rows = []
    for group in _GROUP_SEP.split(s):
        parts = _top_level_split(group.strip(" ,"), (",",))
        found = [_ASSIGNMENT.fullmatch(p) for p in parts]
        if len(parts) < 2 or not all(found):
            return s
        rows.append(([m.group(1) for m in found], [m.group(2) for m in found]))
    if len(rows) < 2 or any(names != rows[0][0] for names, _ in rows):
        return s
    return ", ".join("(" + ", ".join(values) + ")" for _, values in rows)


@functools.lru_cache(maxsize=8192)
def _normalize(s):
    s = _unescape(s).translate(_UNICODE)
    if "\\boxed" in s:  # a gold written as \boxed{...}
        s = last_boxed(s) or s
    s = _unwrap_text(s)
    for pattern, repl in _SUBS:
        if pattern.pattern == _LIST_WORDS:
            s = _assignment_groups(s)
        s = pattern.sub(repl, s)
    s = _GLUED_UNIT.sub(" ", s)  # 5cm -> 5 cm
    s = _NUMBER_WORDS.get(s.lower(), s)  # "twelve"
    if m := _SCIENTIFIC.fullmatch(s):  # 1.5e-3
        s = f"{m.group(1)}*10^{{{m.group(2)}}}"
    if "\\overline" in s:  # 0.1\overline{6}: a repeating decimal, exactly
        s = _REPEATING.sub(_repeating, s)
    words = s.split()
    if len(words) > 1 and any(c.isdigit() for c in s):  # trailing unit words: "5 square units"
        while len(words) > 1 and _is_unit_word(words[-1], " ".join(words[:-1])):
            words.pop()
    s = " ".join(words).rstrip(" .,")
    if m := _EURO_NUMBER.fullmatch(s):  # 1.234,56: dots group thousands, so the comma is decimal
        return re.sub(r"[. ]", "", m.group(1)) + "." + m.group(2)
    if _THOUSANDS.fullmatch(s):
        return s.replace(",", "").replace(" ", "")
    if m := _RHS_THOUSANDS.fullmatch(s):  # k = 58,500
        return m.group(1) + m.group(2).replace(",", "")
    return _drop_thousands(s)


# Units, for one rule only: two different known units make a right number wrong (5 cm != 5 m).
_UNIT_NAMES = {}
for _canon, _names in {
        "mm": "mm millimeter millimeters millimetre millimetres",
        "cm": "cm centimeter centimeters centimetre centimetres",
        "m": "m meter meters metre metres", "km": "km kilometer kilometers kilometre kilometres",
        "in": "in inch inches", "ft": "ft foot feet", "yd": "yd yard yards",
        "mi": "mi mile miles", "kg": "kg kilogram kilograms", "g": "g gram grams",
        "lb": "lb lbs pound pounds", "oz": "oz ounce ounces", "l": "l liter liters litre litres",
        "ml": "ml milliliter milliliters", "s": "s sec secs second seconds",
        "min": "min mins minute minutes", "h": "h hr hrs hour hours", "day": "day days",
        "week": "week weeks", "month": "month months", "year": "year years",
        "$": "$ dollar dollars usd", "cent": "cent cents", "eur": "€ euro euros eur",
        "mph": "mph", "m/s": "m/s", "km/h": "km/h kph"}.items():
    for _n in _names.split():
        _UNIT_NAMES[_n] = _canon
_UNIT_TAIL = re.compile(r"(?:\d|\}|\))\s*(?:(square|sq|cubic|cu)\.?\s+)?([a-z$€]+(?:/[a-z]+)?)\.?"
                        r"\s*(?:\^\s*\{?\s*([23])\s*\}?|([²³]))?\s*\.?\s*$")


@functools.lru_cache(maxsize=4096)
def _unit(s):
    """The canonical unit an answer names at its end ('cm^2', '$'), or None."""
    t = re.sub(r"\\(?:text(?:rm)?|mbox|mathrm)\s*\{([^{}]*)\}", r" \1 ", s).lower()
    t = re.sub(r"\\[,;:! ]|~|(?<!\\)\$", " ", t).strip()  # spacing; math-mode $ is no dollar
    if re.match(r"(?:\\\$|€)\s*[\d.]", t):  # \$36, €5
        return "$" if t[0] == "\\" else "eur"
    m = _UNIT_TAIL.search(t)
    if not m or m.group(2) not in _UNIT_NAMES:
        return None
    power = {"square": "^2", "sq": "^2", "cubic": "^3", "cu": "^3"}.get(m.group(1), "")
    if m.group(3) or m.group(4):
        power = "^" + (m.group(3) or {"²": "2", "³": "3"}[m.group(4)])
    return _UNIT_NAMES[m.group(2)] + power

# -----------------------------------------------------------------------------
# Tokenizer and parser: normalised string -> unevaluated sympy expression (never eval)


class _Bad(Exception):
    """The answer does not parse, or a value is refused as too large."""


_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*|\.\d+)|(\\[a-zA-Z]+|\\[{}\\])|([a-zA-Z]+)|(\S))")
_FUNCS = {"\\sin": sympy.sin, "\\cos": sympy.cos, "\\tan": sympy.tan, "\\cot": sympy.cot,
          "\\sec": sympy.sec, "\\csc": sympy.csc, "\\arcsin": sympy.asin, "\\arccos": sympy.acos,
          "\\arctan": sympy.atan, "\\sinh": sympy.sinh, "\\cosh": sympy.cosh,
          "\\tanh": sympy.tanh, "\\log": sympy.log, "\\ln": sympy.log, "\\exp": sympy.exp,
          "\\abs": sympy.Abs}
_CONSTS = {"\\pi": S.Pi, "\\infty": S.Infinity}
_GREEK = {"\\" + g for g in (
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu "
    "xi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi "
    "Omega").split()}
_ATOM_CMDS = set(_FUNCS) | set(_CONSTS) | _GREEK | {"\\frac", "\\sqrt", "\\binom"}
_WORDS = {c[1:] for c in _FUNCS} | {"sqrt", "pi"}  # plain spellings: sqrt(2), pi
_SIGNS = ("+", "-", "\\pm", "\\mp")


def _tokenize(s):
    toks, pos, s = [], 0, s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        pos = m.end()
        num, cmd, word, char = m.groups()
        if word in _WORDS:
            toks.append("\\" + word)
        elif word:  # single-letter symbols; a longer word ("evelyn", "import") is no math:
            if len(word) > 2:  # one token the parser refuses (a label may still hold it: ABC)
                toks.append("@" + word)
            else:
                toks.extend(word)
        else:
            toks.append(num or cmd or char)
    return toks


def _is_num(t):
    return t[0].isdigit() or (t[0] == "." and len(t) > 1)


# sympy constructors that never evaluate (see _Parser)
def _mul(*a): return Mul(*a, evaluate=False)
def _pow(b, e): return Pow(b, e, evaluate=False)
def _neg(x): return _mul(S.NegativeOne, x)
def _inv(x): return _pow(x, S.NegativeOne)


class _Parser:
    """Recursive descent over tokens:
        expr = term (sign term)*        term = unary (('*' | '/')? unary)*   (implicit product)
        unary = sign unary | power      power = atom '!'* ('^' unary)?       (right-associative)
    Everything is built with evaluate=False: sympy's automatic evaluation (factoring integers,
    multiplying out big powers) is where unbounded work hides."""

    def __init__(self, toks, pm=1):
        self.toks, self.i, self.pm = list(toks), 0, pm  # pm: the sign \pm stands for here
        self.depth, self.in_exponent, self.inexact, self.symbols = 0, 0, False, set()
        self.in_function = 0  # inside a function's argument, ^\circ means degrees

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected=None):
        t = self.peek()
        if t is None or (expected is not None and t != expected):
            raise _Bad(f"expected {expected or 'more'}, got {t}")
        self.i += 1
        return t

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:  # ((((...)))) or \frac{\frac{...}}: refuse, don't recurse
            raise _Bad("too deep")

    def sign(self, t):
        return {"+": 1, "-": -1, "\\pm": self.pm, "\\mp": -self.pm}[t]

    def parse(self):
        e = self.expr()
        if self.i != len(self.toks):
            raise _Bad("trailing tokens")
        return e

    def expr(self):
        terms = [self.term()]
        while self.peek() in _SIGNS:
            sign = self.sign(self.take())
            terms.append(self.term() if sign > 0 else _neg(self.term()))
        return terms[0] if len(terms) == 1 else Add(*terms, evaluate=False)

    def term(self):
        factors = [self.unary()]
        while (t := self.peek()) is not None:
            if t in ("*", "/"):
                self.take()
                factors.append(self.unary() if t == "*" else _inv(self.unary()))
            elif (_is_num(t) or t.isalpha() or t in ("(", "[", "{") or t in _ATOM_CMDS) and \
                    not (_is_num(t) and _is_num(self.toks[self.i - 1]) and
                         not (self.i > 1 and self.toks[self.i - 2] == "^")):
                factors.append(self.power())  # "2 3" is not 6, but 2^3 5^2 is 200
            else:
                break
        return factors[0] if len(factors) == 1 else _mul(*factors)

    def unary(self):
        self.enter()
        if self.peek() in _SIGNS:
            x = self.unary() if self.sign(self.take()) > 0 else _neg(self.unary())
        else:
            x = self.power()
        self.depth -= 1
        return x

    def power(self):
        base = self.atom()
        while self.peek() == "!":  # small literal factorials only: 100000! is refused
            self.take()
            if not (base.is_Integer and 0 <= int(base) <= 100):
                raise _Bad("factorial")
            base = sympy.factorial(base, evaluate=False)
        while self.peek() == "\\degree":  # 30^\circ = 30, but \sin 30^\circ = \sin(\pi/6)
            self.take()
            if self.in_function:
                base = _mul(base, S.Pi, _inv(Integer(180)))
        if self.peek() != "^":
            return base
        self.take()
        self.in_exponent += 1
        ex = self.unary()  # 2^3^2 = 2^9
        self.in_exponent -= 1
        return _pow(base, ex)

    def arg(self):
        """A LaTeX argument: a {group}, or one token (\\frac12 has the arguments 1 and 2)."""
        if self.peek() == "{":
            self.take()
            e = self.expr()
            self.take("}")
            return e
        t = self.peek()
        if t is not None and t.isdigit() and len(t) > 1:
            self.toks[self.i:self.i + 1] = [t[0], t[1:]]
        return self.atom()

    def atom(self):
        self.enter()
        t = self.take()
        if _is_num(t):
            e = self.number(t)
        elif t in ("(", "[", "{", "|"):
            e = self.expr()
            self.take({"(": ")", "[": "]", "{": "}", "|": "|"}[t])
            e = sympy.Abs(e, evaluate=False) if t == "|" else e
        elif t.isalpha() or t in _GREEK:
            e = self.symbol(t.lstrip("\\"))
        elif t in _CONSTS:
            e = _CONSTS[t]
        elif t == "\\frac":
            e = _mul(self.arg(), _inv(self.arg()))
        elif t == "\\sqrt":  # \sqrt[n]{x}
            n = Integer(2)
            if self.peek() == "[":
                self.take()
                n = self.expr()
                self.take("]")
            e = _pow(self.arg(), Rational(1, int(n)) if n.is_Integer and n != 0 else _inv(n))
        elif t == "\\binom":
            n, k = self.arg(), self.arg()
            if not (n.is_Integer and k.is_Integer and 0 <= int(k) <= int(n) <= 1000):
                raise _Bad("binom")
            e = Integer(math.comb(int(n), int(k)))
        elif t in _FUNCS:
            e = self.function(t)
        else:
            raise _Bad(f"unknown token {t!r}")
        self.depth -= 1
        return e

    def number(self, t):
        digits = t.replace(".", "")
        if len(digits) > MAX_DIGITS:
            raise _Bad("literal too long")
        if "." in t:  # exact (0.5 = 1/2), but it marks the answer as a possible approximation
            self.inexact = True
            return Rational(int(digits), 10 ** len(t.split(".")[1]))
        value = Integer(int(t))  # int("025") = 25: AIME's zero padding
        # A mixed number, 1\frac{4}{5} or 1\frac45, is 1 + 4/5; with anything else in the
        # fraction (2\frac{\sqrt3}{2}) it is a product. Decided on the tokens: no backtracking.
        nxt = self.toks[self.i:self.i + 7]
        if self.in_exponent or nxt[:1] != ["\\frac"]:
            return value
        if len(nxt) == 7 and nxt[1::3] == ["{", "{"] and nxt[3::3] == ["}", "}"] and \
                nxt[2].isdigit() and nxt[5].isdigit() and int(nxt[5]):
            self.i += 7
            return Add(value, Rational(int(nxt[2]), int(nxt[5])), evaluate=False)
        if len(nxt) > 1 and nxt[1].isdigit() and len(nxt[1]) == 2 and nxt[1][1] != "0":
            self.i += 2
            return Add(value, Rational(int(nxt[1][0]), int(nxt[1][1])), evaluate=False)
        return value

    def symbol(self, name):
        if self.peek() == "_":  # x_1, a_n, \theta_0 (normalisation removed the braces)
            self.take()
            sub = self.take()
            if not sub.isalnum():
                raise _Bad("subscript")
            name += "_" + sub
        elif name in ("i", "e"):  # the imaginary unit and Euler's number, as MATH uses them
            return S.ImaginaryUnit if name == "i" else S.Exp1
        self.symbols.add(name)
        return Symbol(name)

    def function(self, t):
        base = power = None
        if t == "\\log" and self.peek() == "_":  # \log_2 8
            self.take()
            base = self.arg()
        if self.peek() == "^":  # \sin^2 x
            self.take()
            power = self.arg()
        self.in_function += 1
        f = _FUNCS[t](self.power(), evaluate=False)
        self.in_function -= 1
        f = f if base is None else _mul(f, _inv(sympy.log(base, evaluate=False)))
        return f if power is None else _pow(f, power)

# -----------------------------------------------------------------------------
# Values: exact Fractions when possible, else mpmath at fixed points (both bounded)


def _small(q):
    if q.numerator.bit_length() + q.denominator.bit_length() > MAX_BITS:
        raise _Bad("rational too large")  # never fall back to floats for an exact value
    return q


def _exact(e):
    """The expression as a Fraction, or None when it is not (cheaply) rational."""
    if e.is_Rational:
        return Fraction(int(e.p), int(e.q))
    if isinstance(e, (Add, Mul)):
        acc = Fraction(0 if isinstance(e, Add) else 1)
        for a in e.args:
            if (q := _exact(a)) is None:
                return None
            acc = _small(acc + q if isinstance(e, Add) else acc * q)
        return acc
    if isinstance(e, Pow):
        b, x = _exact(e.base), _exact(e.exp)
        if b is None or x is None or x.denominator != 1:
            return None
        if abs(x) > MAX_EXP or abs(x) * (b.numerator.bit_length() + b.denominator.bit_length()) \
                > MAX_BITS:
            raise _Bad("power too large")  # checked before b ** x is built
        return b ** int(x)
    if isinstance(e, sympy.factorial):
        return Fraction(math.factorial(int(e.args[0])))
    return None


_NUMERIC = {sympy.sin: _MP.sin, sympy.cos: _MP.cos, sympy.tan: _MP.tan, sympy.cot: _MP.cot,
            sympy.sec: _MP.sec, sympy.csc: _MP.csc, sympy.asin: _MP.asin,
            sympy.acos: _MP.acos, sympy.atan: _MP.atan, sympy.sinh: _MP.sinh,
            sympy.cosh: _MP.cosh, sympy.tanh: _MP.tanh, sympy.log: _MP.log,
            sympy.exp: _MP.exp, sympy.Abs: abs}
_CONST_VALUES = {S.Pi: _MP.pi, S.Exp1: _MP.e, S.ImaginaryUnit: _MP.j, S.Infinity: _MP.inf}


def _numeric(e, env):
    """mpmath value with symbols taken from env. Raises _Bad on anything too large."""
    if e.is_Rational:
        return _MP.mpf(int(e.p)) / int(e.q)
    if e.is_Symbol:
        return env[e.name]
    if e in _CONST_VALUES:
        return _CONST_VALUES[e]
    if isinstance(e, (Add, Mul)):
        vals = [_numeric(a, env) for a in e.args]
        return _MP.fsum(vals) if isinstance(e, Add) else _MP.fprod(vals)
    if isinstance(e, Pow):
        b, x = _numeric(e.base, env), _numeric(e.exp, env)
        if abs(x) > MAX_EXP:  # 9^{9^{9^9}}: refused before anything is built
            raise _Bad("exponent too large")
        if e.exp.is_Rational and e.exp.q % 2 == 1 and _MP.im(b) == 0 and _MP.re(b) < 0:
            return (-1) ** int(e.exp.p) * _MP.power(-b, x)  # real odd roots: \sqrt[3]{-8} = -2
        return _MP.power(b, x)
    if isinstance(e, sympy.factorial):
        return _MP.mpf(math.factorial(int(e.args[0])))
    if type(e) in _NUMERIC:
        x = _numeric(e.args[0], env)
        if abs(x) > MAX_EXP and type(e) not in (sympy.log, sympy.Abs):
            raise _Bad("argument too large")  # sin(10^{9999}) needs 10^4 digits of pi
        return _NUMERIC[type(e)](x)
    raise _Bad(f"cannot evaluate {type(e).__name__}")


# The seed of the evaluation points: drawn from the pair of answers being compared, so a reply
# cannot know them in advance (x^2+1 + (x-p0)(x-p1)(x-p2) equals x^2+1 only at p0, p1, p2). A
# context variable, so threads each keep their own.
_SEED = contextvars.ContextVar("verifier_seed", default="")


@functools.lru_cache(maxsize=4096)
def _point(name, k, seed):
    """Value of symbol `name` at evaluation point k of the pair `seed`: pseudo-random."""
    return _MP.mpf(random.Random(f"{seed}\x00{name}#{k}").uniform(0.5, 2.5))


def _evaluate(expr, env):
    """mpmath value of expr; a tiny one (|v| < TINY) is evaluated again at twice the precision:
    a zero's rounding noise shrinks with the precision (sin(pi): 1e-51, then 1e-102) and becomes
    0, a true value (e^{-100}) stays."""
    v = _numeric(expr, env)
    if v != 0 and abs(v) < TINY:
        with _MP.workdps(2 * _MP.dps):
            w = _numeric(expr, env)
        v = _MP.mpf(0) if abs(w) < abs(v) * 1e-20 else +w
    return v


def _value(expr, symbols):
    """('q', Fraction) | ('n', N_POINTS copies of its value (None: undefined), False) |
    ('f', expr, symbols): with free symbols, evaluated at the pair's points (_at_points) | None."""
    try:
        if (q := _exact(expr)) is not None:
            return ("q", q)
    except (ZeroDivisionError, _Bad):  # 1/0, or a rational too large to compare exactly
        return None
    if symbols:
        return ("f", expr, symbols)
    try:
        v = _evaluate(expr, {})
    except Exception:  # division by zero, refused sizes, domain errors
        return None
    return ("n", (v,) * N_POINTS, False)


@functools.lru_cache(maxsize=4096)
def _points_values(expr, symbols, seed):
    vals = []
    for k in range(N_POINTS):
        try:
            vals.append(_evaluate(expr, {s: _point(s, k, seed) for s in symbols}))
        except Exception:  # undefined at this point (division by zero, domain)
            vals.append(None)
    return ("n", tuple(vals), True)


def _at_points(v):
    """A lazy ('f', ...) value evaluated at the current pair's points; others as they are."""
    return _points_values(v[1], v[2], _SEED.get()) if v is not None and v[0] == "f" else v

# -----------------------------------------------------------------------------
# Structure: scalars, relations, tuples/intervals, sets, unions, matrices, text

_OPEN = {"(", "[", "{", "\\{", "\\matbegin"}
_CLOSE = {")", "]", "}", "\\}", "\\matend"}
_CHOICE = re.compile(r"\(([A-Ea-e])\)|([A-E])")
_TEXTLIKE = re.compile(r"[A-Za-z][A-Za-z '.,!?-]*")
_RELATIONS = {"=": "=", "\\approx": "~", "\\in": "in", "<": "<", ">": ">", "\\le": "<=",
              "\\ge": ">=", "\\ne": "!="}
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "!=": "!=", "=": "=", "~": "~"}


def _split(toks, sep):
    """Split a token list at `sep` (a token or a set of tokens) outside any brackets."""
    parts, cur, depth = [], [], 0
    for t in toks:
        depth += (t in _OPEN) - (t in _CLOSE)
        if depth == 0 and (t == sep if isinstance(sep, str) else t in sep):
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    return parts + [cur]


def _encloses(toks):
    """True if the first token opens a bracket that the last token closes ([1,2) counts)."""
    depth = 0
    for k, t in enumerate(toks):
        depth += (t in _OPEN) - (t in _CLOSE)
        if depth == 0:
            return k == len(toks) - 1
    return False


def _decimal(toks):
    """(decimals, significant digits) when the tokens are one signed decimal literal."""
    if toks[:1] in (["-"], ["+"]):
        toks = toks[1:]
    if len(toks) != 1 or "." not in toks[0] or not _is_num(toks[0]):
        return None
    digits = toks[0].replace(".", "").lstrip("0")
    return len(toks[0].split(".")[1]), len(digits)


def _scalar(kind, toks, pm=1, pct=False):
    """(kind, value, inexact, percent, decimal): see _value and _decimal."""
    p = _Parser(toks, pm)
    expr = p.parse()
    return (kind, _value(expr, frozenset(p.symbols)), p.inexact, pct, _decimal(toks))


def _relation(toks, depth):
    """'a op b op c' -> ('r', ops, token parts, parsed parts), or None without a relation."""
    parts = _split(toks, _RELATIONS.keys())
    if len(parts) == 1:
        return None
    if len(parts) > 4 or not all(parts):
        raise _Bad("relation")
    ops, k = [], 0
    for t in toks:  # the relation tokens at depth 0, in order
        k += (t in _OPEN) - (t in _CLOSE)
        if k == 0 and t in _RELATIONS:
            ops.append(_RELATIONS[t])
    nodes = []
    for part in parts:
        try:
            nodes.append(_structure(part, depth + 1))
        except Exception:  # a name that does not parse (\angle ABC): kept as text
            nodes.append(("x", "".join(part)))
    return ("r", tuple(ops), tuple(tuple(p) for p in parts), tuple(nodes))


def _item(toks, depth):
    if (rel := _relation(toks, depth)) is not None:
        return rel
    ratio = _split(toks, ":")
    if len(ratio) == 2 and all(ratio):  # 3:8 is 3/8 (05:00 is a clock time: text)
        node = _scalar("s", ["("] + ratio[0] + [")", "/", "("] + ratio[1] + [")"])
        if node[1] is None:
            raise _Bad("ratio")
        return node
    pct = bool(toks) and toks[-1] == "%"
    if pct:
        toks = toks[:-1]
    n_pm = sum(t in ("\\pm", "\\mp") for t in toks)
    if n_pm > 1:
        raise _Bad("several \\pm")
    if n_pm == 1:
        return ("set", (_scalar("s", toks, 1, pct), _scalar("s", toks, -1, pct)))
    return _scalar("s", toks, pct=pct)


def _collection(toks, depth):
    items = []
    for part in _split(toks, ","):
        node = _structure(part, depth + 1)
        items.extend(node[1] if node[0] == "set" else [node])  # flatten x \pm y
    if len(items) > MAX_ITEMS:
        raise _Bad("too many items")
    return items[0] if len(items) == 1 else ("set", tuple(items))


def _matrix_cells(toks):
    """The cells (rows of token lists) of one \\matbegin ... \\matend block."""
    rows = _split(toks[1:-1], "\\\\")
    cells = [_split(r, "&") for r in (rows[:-1] if not rows[-1] else rows)]
    if not cells or len({len(r) for r in cells}) != 1 or len(cells) * len(cells[0]) > MAX_ITEMS:
        raise _Bad("ragged or large matrix")
    return cells


def _matmul(x, y):
    """(XY)_ij = sum_q X_iq Y_qj, written out as tokens (cells of token lists)."""
    if len(x[0]) != len(y):
        raise _Bad("matrix shapes")
    out = [[sum((["+", "("] + x[i][q] + [")", "*", "("] + y[q][c] + [")"] for q in range(len(y))),
                [])[1:] for c in range(len(y[0]))] for i in range(len(x))]
    if sum(len(c) for r in out for c in r) > 20 * MAX_ANSWER_LEN:
        raise _Bad("matrix product too large")  # A B C D ...: checked at every product
    return out


def _matrix_term(toks):
    """A product of matrices and scalars (2A, A B, A^2, \\frac12 (A)) as cells of token lists."""
    out, scalar, k = None, [], 0
    while k < len(toks):
        wrapped = toks[k] == "(" and toks[k + 1:k + 2] == ["\\matbegin"]  # (A) is A
        j = k + wrapped
        if toks[j] != "\\matbegin":
            if toks[k] != "*":
                scalar.append(toks[k])
            k += 1
            continue
        depth, e = 0, j
        for e in range(j, len(toks)):
            depth += (toks[e] in _OPEN) - (toks[e] in _CLOSE)
            if depth == 0:
                break
        m, k = _matrix_cells(toks[j:e + 1]), e + 1
        if wrapped:
            if toks[k:k + 1] != [")"]:
                raise _Bad("unclosed")
            k += 1
        if toks[k:k + 1] == ["^"]:  # A^2, A^{3}: a small integer power
            power = toks[k + 1:k + 2] if toks[k + 1:k + 2] != ["{"] else toks[k + 2:k + 3]
            if not (power and power[0].isdigit() and 1 <= int(power[0]) <= 10):
                raise _Bad("matrix power")
            k += 2 if toks[k + 1] != "{" else 4
            base = m
            for _ in range(int(power[0]) - 1):
                m = _matmul(m, base)
        out = m if out is None else _matmul(out, m)
    if out is None:
        raise _Bad("no matrix")
    if scalar:
        out = [[["("] + scalar + [")", "*", "("] + c + [")"] for c in r] for r in out]
    return out


def _matrix_expression(toks):
    """A sum of products of matrices ('A + 2B', 'A B'): one matrix node, evaluated cell by
    cell (a scalar term in the sum is refused)."""
    total, sign, term, depth = None, "+", [], 0
    for t in toks + ["+"]:
        if depth == 0 and t in ("+", "-"):
            if term:
                m = _matrix_term(term)
                if total is None:
                    total = [[[sign, "("] + c + [")"] for c in r] for r in m]
                elif (len(total), len(total[0])) != (len(m), len(m[0])):
                    raise _Bad("matrix shapes")
                else:
                    total = [[a + [sign, "("] + c + [")"] for a, c in zip(ra, rm)]
                             for ra, rm in zip(total, m)]
                sign, term = t, []
            else:  # a leading sign: -A
                sign = "-" if (sign == "-") != (t == "-") else "+"
            continue
        depth += (t in _OPEN) - (t in _CLOSE)
        term.append(t)
    return ("m", tuple(tuple(_scalar("s", c) for c in r) for r in total))


def _structure(toks, depth=0):
    if not toks or depth > 4:
        raise _Bad("empty or nested too deep")
    if len(parts := _split(toks, "\\cup")) > 1:
        return ("u", tuple(_structure(p, depth + 1) for p in parts))
    enclosed = _encloses(toks)
    if enclosed and toks[0] in ("(", "[") and toks[1:2] == ["\\matbegin"] and \
            toks[-2] == "\\matend" and _encloses(toks[1:-1]):
        return _structure(toks[1:-1], depth + 1)  # \left[ \begin{array}..\end{array} \right]
    if enclosed and toks[0] == "\\matbegin" and toks[-1] == "\\matend":
        return ("m", tuple(tuple(_scalar("s", c) for c in r) for r in _matrix_cells(toks)))
    if "\\matbegin" in toks and len(_split(toks, ",")) == 1:  # 2A + B, A B: evaluated
        return _matrix_expression(toks)
    if enclosed and (toks[0], toks[-1]) in (("\\{", "\\}"), ("{", "}")) and \
            len(_split(toks[1:-1], ",")) > 1:
        return _collection(toks[1:-1], depth)
    if enclosed and toks[0] == "\\{" and toks[-1] == "\\}":
        if len(toks) > 4 and toks[2] in ("|", "\\mid", ":") and toks[1].isalpha():
            return _structure(toks[3:-1], depth + 1)  # \{x \mid x > 2\}: its condition
        return _collection(toks[1:-1], depth)
    if enclosed and toks[0] in ("(", "[") and toks[-1] in (")", "]") and \
            1 < len(parts := _split(toks[1:-1], ",")) <= MAX_ITEMS:
        return ("t", toks[0] + toks[-1], tuple(_structure(p, depth + 1) for p in parts))
    if len(_split(toks, ",")) > 1:
        return _collection(toks, depth)
    return _item(toks, depth)


@functools.lru_cache(maxsize=8192)
def _parse(s):
    """Normalised answer -> comparable structure (cached: golds repeat across samples)."""
    if m := _CHOICE.fullmatch(s):
        return ("c", (m.group(1) or m.group(2)).upper())
    if _TEXTLIKE.fullmatch(s) and any(len(w) > 2 and w not in _WORDS
                                      for w in re.findall(r"[A-Za-z]+", s)):
        return ("x", " ".join(re.sub(r"[^a-z0-9]+", " ", s.lower()).split()))
    try:
        return _structure(_tokenize(s))
    except Exception:  # _Bad, or whatever sympy raises on odd input: compare as text
        return ("x", re.sub(r"\s*([^\w\s])\s*", r"\1", s))

# -----------------------------------------------------------------------------
# Comparison


def _close(x, y, tol):
    if not (_MP.isfinite(x) and _MP.isfinite(y)):
        return x == y  # an infinity equals only itself; nan equals nothing
    return abs(x - y) <= tol * max(abs(x), abs(y))


def _same_value(u, v, tol, up_to_factor):
    u, v = _at_points(u), _at_points(v)
    if u is None or v is None:
        return False
    if u[0] == "q" and v[0] == "q" and not up_to_factor:
        return u[1] == v[1]
    xs, ys = ((_MP.mpf(w[1].numerator) / w[1].denominator,) * N_POINTS if w[0] == "q" else w[1]
              for w in (u, v))
    symbolic = (u[0] == "n" and u[2]) or (v[0] == "n" and v[2])
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if len(pairs) < (2 if symbolic else 1):
        return False
    if up_to_factor and symbolic:  # d1 = c d2  <=>  d1(k) d2(0) = d2(k) d1(0) at every point
        x0, y0 = max(pairs, key=lambda p: abs(p[0]))
        if x0 != 0 and y0 != 0:
            return all(_close(x * y0, y * x0, tol) for x, y in pairs)
    return all(_close(x, y, tol) for x, y in pairs)


def _percent_of(v):
    """The value / 100 (25% read as 0.25)."""
    v = _at_points(v)
    if v is None:
        return None
    if v[0] == "q":
        return ("q", v[1] / 100)
    return ("n", tuple(None if x is None else x / 100 for x in v[1]), v[2])


def _rounds_to(d, x, min_digits=MIN_ROUNDED_DIGITS):
    """True if scalar d is a decimal with enough digits that is the exact value x rounded to
    d's printed decimals (2/3 -> 0.6667)."""
    if d[0] != "s" or x[0] != "s" or d[4] is None or x[4] is not None or d[4][1] < min_digits or \
            d[1] is None or x[1] is None or d[1][0] != "q" or x[1][0] == "f":
        return False
    half = Fraction(1, 2 * 10 ** d[4][0])
    if x[1][0] == "q":
        return abs(x[1][1] - d[1][1]) <= half
    v = x[1][1][0]
    if v is None or _MP.im(v) != 0:
        return False
    dq = d[1][1]
    return abs(_MP.re(v) - _MP.mpf(dq.numerator) / dq.denominator) <= \
        _MP.mpf(half.numerator) / half.denominator * (1 + _MP.mpf(10) ** -30)


def _same_scalar(a, b):
    tol = REL_TOL_DECIMAL if a[2] or b[2] else REL_TOL
    if _same_value(a[1], b[1], tol, up_to_factor=a[0] == "e"):
        return True
    if a[0] != "s":
        return False
    if a[3] != b[3]:  # one side a percent: 25% = 0.25
        p, q = (a, b) if a[3] else (b, a)
        if _same_value(_percent_of(p[1]), q[1], tol, False):
            return True
    return _rounds_to(a, b) or _rounds_to(b, a)


def _real(node):
    """A scalar node without free symbols as a Fraction or a real mpf (+-inf too), else None."""
    if node[0] != "s" or node[1] is None or node[3]:
        return None
    v = node[1]
    if v[0] == "q":
        return v[1]
    if v[0] == "f":
        return None
    x = v[1][0]
    if x is None or _MP.im(x) != 0:
        return None
    return _MP.re(x)


def _key(x):
    return _MP.mpf(x.numerator) / x.denominator if isinstance(x, Fraction) else x


def _same_end(x, y):
    if isinstance(x, Fraction) and isinstance(y, Fraction):
        return x == y
    return _close(_key(x), _key(y), 1e-9)


def _linear(toks):
    """A side of an inequality as (a, b): the side is a*v + b in its one variable v; (1, 0)
    for a name of two or more symbols (g(x), x+y: the name is the variable); else None."""
    p = _Parser(list(toks))
    expr = p.parse()
    if len(p.symbols) >= 2:
        return 1, 0
    if len(p.symbols) != 1:
        return None
    (name,) = p.symbols
    # 1, 2, 3 give a and b exactly; two points drawn from the side itself check that it is a
    # line there too (x + (x-1)(x-2)(x-3) is not), at places the reply cannot aim for
    rng = random.Random(" ".join(toks))
    xs = [_MP.mpf(k) for k in (1, 2, 3)] + [_MP.mpf(rng.uniform(-9, 9)) for _ in range(2)]
    f = [_numeric(expr, {name: x}) for x in xs]
    if any(_MP.im(v) != 0 or not _MP.isfinite(v) for v in f):
        return None
    a = f[1] - f[0]
    if a == 0 or not all(_close(y - f[0], a * (x - 1), 1e-20) for x, y in zip(xs[2:], f[2:])):
        return None
    return _MP.re(a), _MP.re(f[0] - a)


_INF = _MP.inf


def _relation_intervals(node):
    ops, raw, nodes = node[1], node[2], node[3]
    if ops == ("in",) and _is_label(raw[0]):  # x \in [1, 4]
        return _intervals(nodes[1])
    if not set(ops) <= {"<", "<=", ">", ">=", "!="}:
        return None
    if len(ops) == 2 and "!=" not in ops:  # lo < middle <= hi
        if all(o in (">", ">=") for o in ops):
            ops, raw, nodes = tuple(_FLIP[o] for o in reversed(ops)), raw[::-1], nodes[::-1]
        if not all(o in ("<", "<=") for o in ops):
            return None
        lo, hi, lin = _real(nodes[0]), _real(nodes[2]), _linear(raw[1])
        if lo is None or hi is None or lin is None:
            return None
        a, b = lin
        ends = [((_key(lo) - b) / a, ops[0] == "<="), ((_key(hi) - b) / a, ops[1] == "<=")]
        if a < 0:
            ends.reverse()
        return [(ends[0][0], ends[0][1], ends[1][0], ends[1][1])]
    if len(ops) != 1:
        return None
    op, lv, rv = ops[0], _real(nodes[0]), _real(nodes[1])
    if rv is not None and lv is None:
        side, c = raw[0], rv
    elif lv is not None and rv is None:
        side, c, op = raw[1], lv, _FLIP[op]
    else:
        return None
    if (lin := _linear(side)) is None:
        return None
    a, b = lin
    bound = (_key(c) - b) / a if (a, b) != (1, 0) else c
    if a < 0:
        op = _FLIP[op]
    if op == "!=":
        return [(-_INF, False, bound, False), (bound, False, _INF, False)]
    if op in ("<", "<="):
        return [(-_INF, False, bound, op == "<=")]
    return [(bound, op == ">=", _INF, False)]


def _intervals(node):
    """The node as a union of real intervals [(lo, lo_closed, hi, hi_closed)], or None."""
    kind = node[0]
    if kind == "t":
        if len(node[2]) != 2:
            return None
        lo, hi = _real(node[2][0]), _real(node[2][1])
        if lo is None or hi is None or _key(lo) > _key(hi):
            return None
        return [(lo, node[1][0] == "[", hi, node[1][1] == "]")]
    if kind == "r":
        try:
            return _relation_intervals(node)
        except Exception:  # a side that does not evaluate
            return None
    if kind == "u" or (kind == "set" and any(p[0] == "r" for p in node[1])):
        out = []
        for part in node[1]:
            if (iv := _intervals(part)) is None:
                return None
            out.extend(iv)
        return out
    return None


def _canonical(ivs):
    """Sorted, overlapping or touching intervals merged: (0,1) u [1,2) = (0,2)."""
    out = []
    for lo, lc, hi, hc in sorted(ivs, key=lambda v: (_key(v[0]), not v[1])):
        if out:
            plo, plc, phi, phc = out[-1]
            touch = _same_end(lo, phi)
            if _key(lo) < _key(phi) and not touch or touch and (lc or phc):
                if _same_end(hi, phi):
                    out[-1] = (plo, plc, phi, phc or hc)
                elif _key(hi) > _key(phi):
                    out[-1] = (plo, plc, hi, hc)
                continue
        out.append((lo, lc, hi, hc))
    return out


def _same_intervals(ia, ib):
    ca, cb = _canonical(ia), _canonical(ib)
    return len(ca) == len(cb) and all(
        x[1] == y[1] and x[3] == y[3] and _same_end(x[0], y[0]) and _same_end(x[2], y[2])
        for x, y in zip(ca, cb))


def _is_label(toks):
    """A name on the left of '=': x, f(x), |PQ|, (a, b), S_1 : S_2, \\angle ABC, x + y
    (letters; numbers only in subscripts and function arguments)."""
    named, k = False, 0
    while k < len(toks):
        t = toks[k]
        if t == "_":
            k += 2
            continue
        if t == "(" and k and (toks[k - 1].isalpha() or toks[k - 1] in _GREEK):
            depth = 0
            while k < len(toks):  # f(2): skip the argument
                depth += (toks[k] == "(") - (toks[k] == ")")
                k += 1
                if depth == 0:
                    break
            continue
        if _is_num(t) or t in ("\\frac", "\\sqrt"):
            return False
        named = named or t.isalpha() or t in _GREEK or (t[:1] in "\\@" and t[1:].isalpha())
        k += 1
    return named


def _is_constant(toks):
    """A computation: no letters (\\binom{6}{3}, 2 + 3, \\frac{2}{3})."""
    return not any(t.isalpha() or t in _GREEK or t[:1] == "@" for t in toks)


def _equation_ends(r):
    """An '=' chain as (first tokens, first node, last tokens, last node): x = 2+3 = 5 is x = 5."""
    return r[2][0], r[3][0], r[2][-1], r[3][-1]


def _approximated(sides):
    r"""The one value an approximation chain stands for: its first side when every later side
    agrees with it (\frac23 \approx 0.67: equal, or a decimal that is it rounded to its printed
    digits), else its last side. So 12 \approx 13 is 13, never 12 and 13."""
    first = sides[0]
    if all(_same(first, x) or _rounds_to(x, first, 1) for x in sides[1:]):
        return first
    return sides[-1]


def _relation_value(r, v):
    ops, raw, nodes = r[1], r[2], r[3]
    if not set(ops) <= {"=", "~", "in"}:
        return False
    constant = _is_constant(raw[0])
    if not (constant or _is_label(raw[0])):
        return False  # x + 1 = 4 is not the answer 4
    if "~" in ops:  # a chain of approximations is one value: never one per side (a hedge)
        return _same(_approximated(nodes[0 if constant else 1:]), v)
    if v[0] == "c":  # x = C against the choice C
        return raw[-1] in ((v[1],), ("(", v[1], ")"))
    return _same(nodes[-1], v)


def _relation_relation(a, b):
    if set(a[1]) <= {"=", "in"} and set(b[1]) <= {"=", "in"} and ("in" in a[1]) == ("in" in b[1]):
        la, na, ra, ma = _equation_ends(a)
        lb, nb, rb, mb = _equation_ends(b)
        if _is_constant(la) and _is_constant(lb):
            return _same(ma, mb)  # computations: their results
        if la == lb or (_is_label(la) and _is_label(lb) and "in" in a[1]):
            return _same(ma, mb)
        if "=" in a[1] and ("r" not in (ma[0], mb[0])):
            try:  # lhs - rhs up to a nonzero factor: 5x+5y=5 is x+y=1
                da = _scalar("e", list(la) + ["-", "("] + list(ra) + [")"])
                db = _scalar("e", list(lb) + ["-", "("] + list(rb) + [")"])
                if (da[1] and da[1][0] == "f") or (db[1] and db[1][0] == "f"):
                    return _same(da, db)
            except Exception:
                pass
        return False
    if a[1] == b[1]:
        return all(map(_same, a[3], b[3]))
    if a[1] == tuple(_FLIP[o] for o in reversed(b[1])):  # a < b is b > a
        return all(map(_same, a[3], b[3][::-1]))
    return False


def _same_relation(a, b):
    ia, ib = _intervals(a), _intervals(b)
    if ia is not None and ib is not None:
        return _same_intervals(ia, ib)
    if a[0] != "r":
        a, b = b, a
    if b[0] != "r":
        return _relation_value(a, b)
    return _relation_relation(a, b)


def _assigns(node):
    """True for a list of values given to distinct names (x = 2, y = 5; PQ = 2, RS = 9): its
    values are read in the order written, as a tuple's are."""
    items = node[1]
    return all(x[0] == "r" and x[1] == ("=",) and _is_label(x[2][0]) for x in items) and \
        len({x[2][0] for x in items}) == len(items)


def _same(a, b):
    if a[0] == "r" or b[0] == "r":
        return _same_relation(a, b)
    if a[0] != b[0]:
        if {a[0], b[0]} == {"set", "t"}:  # x = 5, y = 6 against (5, 6)
            s, t = (a, b) if a[0] == "set" else (b, a)
            if t[1] == "()" and len(s[1]) == len(t[2]) and all(
                    x[0] == "r" and x[1] == ("=",) and len(x[2][0]) == 1 and x[2][0][0].isalpha()
                    for x in s[1]) and len({x[2][0] for x in s[1]}) == len(s[1]):
                return all(_same(x[3][1], y) for x, y in zip(s[1], t[2]))
        if "u" in (a[0], b[0]) or "set" in (a[0], b[0]):  # a union against one interval
            ia, ib = _intervals(a), _intervals(b)
            return ia is not None and ib is not None and _same_intervals(ia, ib)
        return False
    if a[0] in ("s", "e"):
        return _same_scalar(a, b)
    if a[0] == "t":
        return a[1] == b[1] and len(a[2]) == len(b[2]) and all(map(_same, a[2], b[2]))
    if a[0] == "m":
        return len(a[1]) == len(b[1]) and all(
            len(r) == len(s) and all(map(_same, r, s)) for r, s in zip(a[1], b[1]))
    if a[0] == "set" and (_assigns(a) or _assigns(b)) and \
            not all(p[0] == "r" for p in a[1] + b[1]):  # b_2 = 7, b_9 = 40 against 7, 40
        return len(a[1]) == len(b[1]) and all(map(_same, a[1], b[1]))  # in the order written
    if a[0] in ("set", "u"):  # order-free: match every element exactly once
        left = list(b[1])
        for x in a[1]:
            k = next((k for k, y in enumerate(left) if _same(x, y)), None)
            if k is None:
                break
            left.pop(k)
        else:
            if not left:
                return True
        if a[0] == "u" or any(p[0] == "r" for p in a[1] + b[1]):
            ia, ib = _intervals(a), _intervals(b)  # (0,1) u [1,2) = (0,2) u ...
            return ia is not None and ib is not None and _same_intervals(ia, ib)
        return False
    return a[1] == b[1]  # words, choice letters, unparsed text

# -----------------------------------------------------------------------------
# is_equiv

# a decimal comma where no list can be meant (2,5 cm; 12,50 €; 2,5%): a single comma with 1-2
# or 4+ digits after it, in an answer that names a unit, a currency or a percent. A bare "2,5"
# stays a list (MATH writes "1,2", "12,9" for two solutions), so no reply reads both ways.
_MONEY_OR_PERCENT = re.compile(r"%|percent|\\\$|€|£|\d\s+\$\s*$")


def _decimal_comma(s):
    if s.count(",") == 1 and _DECIMAL_COMMA.search(s) and \
            (_MONEY_OR_PERCENT.search(s) or _unit(s) is not None):
        return _DECIMAL_COMMA.sub(r"\1.\2", s)
    return s


def _equiv(a, b):
    if a.strip() and a.strip() == b.strip():
        return True
    a, b = _decimal_comma(a), _decimal_comma(b)
    na, nb = _normalize(a), _normalize(b)
    if not na or not nb:
        return False
    if na == nb:
        return True
    if _PLAIN_NUM.fullmatch(na) and _PLAIN_NUM.fullmatch(nb):  # the common RL case
        return Fraction(na) == Fraction(nb)
    return _same(_parse(na), _parse(nb))


def is_equiv(a: str, b: str) -> bool:
    """True if the two answer strings are mathematically equal (every rule: docs/verifier.md)."""
    try:
        if not (isinstance(a, str) and isinstance(b, str)):
            return False
        if len(a) > MAX_ANSWER_LEN or len(b) > MAX_ANSWER_LEN:
            return False
        sa, sb = a.strip(), b.strip()
        if _INT.fullmatch(sa) and _INT.fullmatch(sb):  # RL's fast path: two integers
            return int(sa) == int(sb)
        seed = _SEED.set("\x00".join(sorted((sa, sb))))  # the same points both ways round
        try:
            if not _equiv(a, b):
                return False
        finally:
            _SEED.reset(seed)
        ua, ub = _unit(a), _unit(b)
        return ua is None or ub is None or ua == ub  # 5 cm != 5 m
    except Exception:  # hostile input must never crash a training run
        return False
