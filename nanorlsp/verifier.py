r"""
The outcome verifier: pull the final answer out of a response and decide if it equals the gold.

    from nanorlsp.verifier import extract_answer, is_equiv, grade
    grade("... so the probability is \\boxed{\\dfrac12}.", "0.5")      # True

RL maximises whatever this module calls correct, so it must be exact (no false positive for a
policy to farm), fast (it runs on every sample) and unbreakable: model output is hostile input.
Nothing from a response is ever executed: sympy's parse_expr / sympify / parse_latex call eval,
so they are never used. A small tokenizer and recursive-descent parser build unevaluated sympy
objects directly, and two walkers of our own evaluate them under hard size limits.

extract_answer: the last \boxed{...} (balanced braces; also `\boxed x` and \fbox{...}); else the
last "Answer: ..." or "... answer is ..." (to the end of the line or sentence, or the $...$ right
after it: "The final answer is $42$. I hope it is correct." gives 42); else GSM8K's last "#### n".
Linear time on any input: rfind/lower plus scans capped at MAX_ANSWER_LEN characters.

Normalisation (string level): unicode minus, times, pi; $ and \( \); \left \right \big; spacing
\! \, \; \quad ~; \dfrac \tfrac -> \frac; \cdot \times -> *, \div -> /, ** -> ^; degree and
percent signs dropped; \text{} \mbox{} \mathrm{}: unwrapped at the start (\text{(B)} -> (B)),
dropped with a following ^2 after a value (units: 5\text{ cm} -> 5); trailing unit words after a
number (cm, inches, dollars ...); thousands separators (7,425,000; 11,\!111; 1\,000) when the
whole answer is one such number.

is_equiv, cheapest first: equal strings; equal normalised strings; two plain numbers compared
exactly as fractions (most RL checks end here, without sympy); else both sides are parsed:
  - Scalars: exact rational arithmetic when both sides are rational (0.5 = 1/2 = \frac12, and
    12 != 1.2, 0.333 != 1/3: a rational answer must be exact). Otherwise mpmath at 50 digits,
    at N_POINTS pseudo-random points in [0.5, 2.5] per free symbol (fixed by the symbol's name),
    relative tolerance 1e-12, or 1e-6 when a side contains a decimal, which is then read as an
    approximation (\pi = 3.1415927, 2\sqrt5 = 4.472136; but 3.14 != \pi). So identities that
    hold for positive reals count as equal: x^2+2x+1 = (x+1)^2, \sqrt{x^2} = x.
  - i is the imaginary unit and e Euler's number; 2\sqrt3, 3\pi, 2x, xy are products, but an
    integer before a fraction of integers is a mixed number (1\frac45 = 9/5, as MATH writes).
  - (a, b) and [a, b) are ordered; brackets and order must match (a point equals the open
    interval with the same ends). \{a, b\} and a bare list "a, b" (MATH's "enter all solutions")
    are sets: order-free and equal to each other, never to a tuple: (1,2) != \{1,2\}. A set of
    one element is that element; A \cup B is an order-free union; x \pm y is the set {x+y, x-y}.
  - "x = 3", "y = 2x+1", "x \in [1,2]": a one-symbol left side is dropped. Other equations
    compare as lhs - rhs up to a nonzero factor (5x+5y=5 equals x+y=1).
  - Matrices elementwise; choice letters (B) = B = \text{(B)}; words of three or more letters
    (\text{Evelyn} = evelyn) case- and punctuation-free; whatever does not parse (numbers in
    a base, 204_5; inequalities) compares as whitespace-normalised text.
  - 50\% = 50 (the sign is dropped, never converted: 0.5 != 50\%); 30^\circ = 30 (not \pi/6).

Limits (every call returns a bool, never raises, in milliseconds): answers over MAX_ANSWER_LEN
chars are refused; literals over MAX_DIGITS digits, nesting over MAX_DEPTH, factorials above
100! and containers over MAX_ITEMS do not parse; an exponent or function argument whose value
exceeds MAX_EXP (9^{9^{9^9}}, 2^{100000}), or a rational past MAX_BITS, is not comparable (False).
There is no sympy.simplify: every step is bounded by the answer's size, so no timer or signal is
needed (a SIGALRM would not work off the main thread anyway).
"""
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
N_POINTS = 3           # evaluation points for expressions with free symbols
REL_TOL, REL_TOL_DECIMAL, ABS_TOL = 1e-12, 1e-6, 1e-30
_MP = mpmath.MPContext()  # private context: our precision never touches the global mpmath.mp
_MP.dps = 50

# -----------------------------------------------------------------------------
# Extraction


def _box_content(text, i, name_len, limit):
    """Content of the box command at text[i] (name_len chars), scanning at most `limit` chars."""
    j = i + name_len
    end = len(text) if limit is None else min(len(text), j + limit + 2)
    if j < len(text) and text[j] == "{":
        depth = 0
        for k in range(j, end):
            c = text[k]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[j + 1:k]
        return None  # unbalanced (or longer than any answer): never closed
    if j < len(text) and text[j] == " ":
        # "\boxed 5": the token after the space, up to whitespace or '$'
        rest = text[j + 1:end].lstrip()
        out = []
        for c in rest:
            if c.isspace() or c == "$":
                break
            out.append(c)
        return "".join(out) or None
    return None


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} in `text` (balanced braces), or of a bare `\boxed x`.

    Returns None when there is no \boxed, or when its braces never close (a truncated answer is
    no answer). Linear time, no regex backtracking: model output is untrusted input.
    """
    i = text.rfind("\\boxed")
    return None if i < 0 else _box_content(text, i, len("\\boxed"), None)


def _answer_tail(text):
    """The answer after an 'Answer:' marker: one line, one sentence, or one $...$."""
    line = text[:MAX_ANSWER_LEN + 8].lstrip(" \t\r\n:*").split("\n", 1)[0].strip()
    if line.startswith("$"):
        inner = line.lstrip("$")
        line = inner[:inner.find("$")] if "$" in inner else inner
    else:
        line = line.split(". ", 1)[0]
    return line.strip().rstrip(".").strip("* ") or None


def find_answer(response: str) -> tuple[str, int] | None:
    r"""(the final answer, the index in `response` where it starts), or None: last \boxed{} /
    \fbox{}, else 'Answer: ...', else '#### n'. The one extraction the grader and the RL reward
    share: the reward's "no answer" test and its reasoning length L (the text before the answer)
    come from this same call (issue 14 item 7)."""
    if not isinstance(response, str):
        return None
    i = max(response.rfind("\\boxed"), response.rfind("\\fbox"))
    if i >= 0:
        box = _box_content(response, i, 6 if response.startswith("\\boxed", i) else 5,
                           MAX_ANSWER_LEN)
        if box and box.strip():
            return box.strip(), i
    low = response.lower()  # one linear pass; the markers are then found with rfind
    k, key = max((low.rfind(key), key) for key in ("answer:", "answer is"))
    if k >= 0 and (ans := _answer_tail(response[k + len(key):])):
        return ans, k
    k = response.rfind("####")
    if k >= 0:
        ans = response[k + 4:k + 4 + MAX_ANSWER_LEN].strip().split("\n", 1)[0].strip()
        if ans:
            return ans, k
    return None


def extract_answer(response: str) -> str | None:
    r"""The final answer: last \boxed{} / \fbox{}, else 'Answer: ...', else '#### n', else None."""
    found = find_answer(response)
    return None if found is None else found[0]


def answer_start(response: str) -> int | None:
    """Where the final answer find_answer extracts begins (None: no answer)."""
    found = find_answer(response)
    return None if found is None else found[1]


# -----------------------------------------------------------------------------
# String normalisation

_UNICODE = str.maketrans({"−": "-", "–": "-", "×": "*", "·": "*", "÷": "/", "π": "\\pi ",
                          "∞": "\\infty ", "√": "\\sqrt", "°": "", "\u2009": " ",
                          "\u00a0": " "})
_TEXT_CMD = re.compile(r"\\(?:text(?:bf|it|rm|normal)?|mbox|math(?:rm|bf|it|sf)|operatorname)"
                       r"\s*\{")
_UNIT = re.compile(r"(?:cm|mm|km|meters?|metres?|inch(?:es)?|feet|foot|ft|yards?|miles?|mph|kg|"
                   r"grams?|pounds|lbs|ounces|lit(?:er|re)s|cents?|dollars?|units?|degrees?|"
                   r"square|sq|cubic|hours?|minutes?|seconds?|days)\.?(?:\^\{?[23]\}?)?", re.I)
_SUBS = [(re.compile(p), r) for p, r in [
    (r"\\?\$", ""),                                             # math mode, dollars
    (r"(?<!\\)\\[()\[\]]", " "),                                # \( \) \[ \]
    (r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])\s*\.?", ""),  # \left( -> (, \left. -> nothing
    (r"(?<=\d)(?:,\\!|\{,\})\s*(?=\d{3}(?!\d))", ""),           # 10,\!080 and 10{,}080
    (r"\\!", ""),
    (r"(?<!\\)\\[,;:> ]|\\q?quad(?![a-zA-Z])|~", " "),          # spacing (but not \\ + space)
    (r"\\[dtc]frac(?![a-zA-Z])", r"\\frac"),
    (r"\\(?:displaystyle|limits)(?![a-zA-Z])", ""),
    (r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])", ""),
    (r"\\?%", ""),
    (r"\\(?:cdot|times|ast)(?![a-zA-Z])", "*"), (r"\\div(?![a-zA-Z])", "/"), (r"\*\*", "^"),
    (r"_\{(\w+)\}", r"_\1"),                                    # 4210_{5} -> 4210_5
    (r"\\begin\{[pbBvV]?matrix\}", r" \\matbegin "), (r"\\end\{[pbBvV]?matrix\}", r" \\matend "),
]]
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\s?\d{3})+(?:\.\d+)?|[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_PLAIN_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


def _unwrap_text(s):
    r"""\text{..}-like commands: unwrapped at the start, dropped as a unit after a value."""
    for _ in range(100):  # each pass removes one command; answers are short
        m = _TEXT_CMD.search(s)
        inner = _box_content(s, m.start(), m.end() - 1 - m.start(), None) if m else None
        if inner is None:
            return s
        head, tail = s[:m.start()], s[m.end() + len(inner) + 1:]
        if inner.strip() in ("and", "or"):  # "2 \text{ and } 3", "1, 2, \text{and } 3": lists
            inner = "" if head.rstrip().endswith(",") else ","
        elif re.search(r"[\w})\]](?:\s|\\[,;: ]|~)*$", head) and \
                re.fullmatch(r"[A-Za-z .]*", inner):  # a unit after a value: 15\mbox{ cm}^2
            inner, tail = "", re.sub(r"^\s*\^\s*\{?\s*[23]\s*\}?", "", tail)
        s = head + inner + tail
    return s


@functools.lru_cache(maxsize=8192)
def _normalize(s):
    s = s.translate(_UNICODE)
    if "\\boxed" in s:  # a gold written as \boxed{...}
        s = last_boxed(s) or s
    s = _unwrap_text(s)
    for pattern, repl in _SUBS:
        s = pattern.sub(repl, s)
    words = s.split()
    if any(c.isdigit() for c in s):  # trailing unit words after a value: "5 square units"
        while len(words) > 1 and _UNIT.fullmatch(words[-1].rstrip(".")):
            words.pop()
    s = " ".join(words).rstrip(" .")
    return s.replace(",", "").replace(" ", "") if _THOUSANDS.fullmatch(s) else s

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
        elif word:  # single-letter symbols; a longer word ("evelyn", "import") is no math
            if len(word) > 2:
                raise _Bad(word)
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
                    not (_is_num(t) and _is_num(self.toks[self.i - 1])):  # "2 3" is not 6
                factors.append(self.power())
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
        f = _FUNCS[t](self.power(), evaluate=False)
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


@functools.lru_cache(maxsize=1024)
def _point(name, k):
    """Value of symbol `name` at evaluation point k: pseudo-random, fixed by the name."""
    return _MP.mpf(random.Random(f"{name}#{k}").uniform(0.5, 2.5))


def _value(expr, symbols):
    """('q', Fraction) | ('n', N_POINTS values (None: undefined there), has_symbols) | None."""
    try:
        if (q := _exact(expr)) is not None:
            return ("q", q)
    except (ZeroDivisionError, _Bad):  # 1/0, or a rational too large to compare exactly
        return None
    vals = []
    for k in range(N_POINTS if symbols else 1):
        try:
            vals.append(_numeric(expr, {s: _point(s, k) for s in symbols}))
        except Exception:  # division by zero, refused sizes, domain errors
            vals.append(None)
    if all(v is None for v in vals):
        return None
    return ("n", tuple(vals) * (1 if symbols else N_POINTS), bool(symbols))

# -----------------------------------------------------------------------------
# Structure: scalars, equations, tuples/intervals, sets, unions, matrices, text

_OPEN = {"(", "[", "{", "\\{", "\\matbegin"}
_CLOSE = {")", "]", "}", "\\}", "\\matend"}
_CHOICE = re.compile(r"\(([A-Ea-e])\)|([A-E])")
_TEXTLIKE = re.compile(r"[A-Za-z][A-Za-z '.,!?-]*")


def _split(toks, sep):
    """Split a token list at `sep` outside any brackets."""
    parts, cur, depth = [], [], 0
    for t in toks:
        depth += (t in _OPEN) - (t in _CLOSE)
        if t == sep and depth == 0:
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


def _scalar(kind, toks, pm=1):
    p = _Parser(toks, pm)
    expr = p.parse()
    return (kind, _value(expr, frozenset(p.symbols)), p.inexact)


def _item(toks, depth):
    for rel in ("=", "\\in"):
        sides = _split(toks, rel)
        if len(sides) > 2:
            raise _Bad("chained relation")
        if len(sides) == 2:
            lhs, rhs = sides
            if (lhs[:1] and (lhs[0].isalpha() or lhs[0] in _GREEK)) and \
                    (len(lhs) == 1 or (len(lhs) == 3 and lhs[1] == "_")):  # x = 3, a_1 = 3
                return _structure(rhs, depth + 1)
            if rel != "=":
                raise _Bad("relation")
            return _scalar("e", lhs + ["-", "("] + rhs + [")"])
    n_pm = sum(t in ("\\pm", "\\mp") for t in toks)
    if n_pm > 1:
        raise _Bad("several \\pm")
    if n_pm == 1:
        return ("set", (_scalar("s", toks, 1), _scalar("s", toks, -1)))
    return _scalar("s", toks)


def _collection(toks, depth):
    items = []
    for part in _split(toks, ","):
        node = _structure(part, depth + 1)
        items.extend(node[1] if node[0] == "set" else [node])  # flatten x \pm y
    if len(items) > MAX_ITEMS:
        raise _Bad("too many items")
    return items[0] if len(items) == 1 else ("set", tuple(items))


def _structure(toks, depth=0):
    if not toks or depth > 4:
        raise _Bad("empty or nested too deep")
    if len(parts := _split(toks, "\\cup")) > 1:
        return ("u", tuple(_structure(p, depth + 1) for p in parts))
    enclosed = _encloses(toks)
    if enclosed and toks[0] == "\\matbegin" and toks[-1] == "\\matend":
        rows = _split(toks[1:-1], "\\\\")
        cells = [_split(r, "&") for r in (rows[:-1] if not rows[-1] else rows)]
        if len({len(r) for r in cells}) != 1 or len(cells) * len(cells[0]) > MAX_ITEMS:
            raise _Bad("ragged or large matrix")
        return ("m", tuple(tuple(_scalar("s", c) for c in r) for r in cells))
    if enclosed and toks[0] == "\\{" and toks[-1] == "\\}":
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


def _close(x, y, tol):
    if not (_MP.isfinite(x) and _MP.isfinite(y)):
        return x == y  # an infinity equals only itself; nan equals nothing
    return abs(x - y) <= tol * max(abs(x), abs(y)) + ABS_TOL


def _same_value(u, v, tol, up_to_factor):
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


def _same(a, b):
    if a[0] != b[0]:
        return False
    if a[0] in ("s", "e"):
        tol = REL_TOL_DECIMAL if a[2] or b[2] else REL_TOL
        return _same_value(a[1], b[1], tol, up_to_factor=a[0] == "e")
    if a[0] == "t":
        return a[1] == b[1] and len(a[2]) == len(b[2]) and all(map(_same, a[2], b[2]))
    if a[0] == "m":
        return len(a[1]) == len(b[1]) and all(
            len(r) == len(s) and all(map(_same, r, s)) for r, s in zip(a[1], b[1]))
    if a[0] in ("set", "u"):  # order-free: match every element exactly once
        left = list(b[1])
        for x in a[1]:
            k = next((k for k, y in enumerate(left) if _same(x, y)), None)
            if k is None:
                return False
            left.pop(k)
        return not left
    return a[1] == b[1]  # words, choice letters, unparsed text

# -----------------------------------------------------------------------------
# Public API


def is_equiv(a: str, b: str) -> bool:
    """True if the two answer strings are mathematically equal (see the module docstring)."""
    try:
        if not (isinstance(a, str) and isinstance(b, str)):
            return False
        if len(a) > MAX_ANSWER_LEN or len(b) > MAX_ANSWER_LEN:
            return False
        if a.strip() and a.strip() == b.strip():
            return True
        na, nb = _normalize(a), _normalize(b)
        if not na or not nb:
            return False
        if na == nb:
            return True
        if _PLAIN_NUM.fullmatch(na) and _PLAIN_NUM.fullmatch(nb):  # the common RL case
            return Fraction(na) == Fraction(nb)
        return _same(_parse(na), _parse(nb))
    except Exception:  # hostile input must never crash a training run
        return False


def grade(response: str, gold: str) -> bool:
    """True if the response's final answer (or the whole response, when it is a bare answer)
    equals the gold answer."""
    try:
        if isinstance(gold, int) and not isinstance(gold, bool):
            gold = str(gold)
        ans = extract_answer(response)
        if ans is None and isinstance(response, str) and len(response) <= MAX_ANSWER_LEN:
            ans = response
        return ans is not None and is_equiv(ans, gold)
    except Exception:
        return False
