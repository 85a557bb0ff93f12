"""
How fast the outcome verifier grades, five ways (docs/verifier.md quotes these rows).

    python bench_verifier.py

RL grades every rollout, so grading must cost microseconds, not the sampler's milliseconds.
1. synthetic RL responses ending in \\boxed{n} against integer golds (half right): the fast path
   (issue 15's target: >= 50k grades/s)
2. synthetic free-text replies with no box, "... So she has n apples left." (the last-number rule)
3. MATH-500 golds boxed in a response as themselves, as "$ a $", or perturbed ("+1" appended,
   a digit changed): the parser and exact / numeric comparison (needs ../shared/data)
4. the same as 3 with the verifier's caches cleared before every call: no reuse at all
5. the agreement corpus (tests/verifier_corpus.py: every kind of reply, ~18k items), caches
   cleared before every call (needs ../shared/data)
"""
import json
import os
import random
import sys
import time

from nanorlsp import verifier as V

ROOT = os.path.dirname(os.path.abspath(__file__))
N = 10_000


def row(label, pairs, clear=False, expect=None):
    t = time.perf_counter()
    ok = []
    for r, g in pairs:
        if clear:
            V._normalize.cache_clear()
            V._parse.cache_clear()
            V._unit.cache_clear()
        ok.append(V.grade(r, g))
    dt = time.perf_counter() - t
    if expect is not None:
        assert ok == expect
    print(f"{label:<34} {len(pairs):>6} grades {dt:6.3f} s {dt / len(pairs) * 1e6:6.0f} us/grade "
          f"{len(pairs) / dt:>9,.0f} grades/s ({sum(ok)} equal)")


rng = random.Random(0)
golds = [rng.randint(0, 10 ** 6) for _ in range(N)]
resps = [f"Let me work through this step by step.\n12 * 7 = 84, carry the 1...\n"
         f"So the answer is \\boxed{{{g if k % 2 else g + 1}}}." for k, g in enumerate(golds)]
row("synthetic boxed{n} vs int", list(zip(resps, map(str, golds))),
    expect=[bool(k % 2) for k in range(N)])
resps = [f"She buys 3 bags of 12 apples, 3 * 12 = 36.\nThen she gives away 5.\n"
         f"So she has {g if k % 2 else g + 1} apples left." for k, g in enumerate(golds)]
row("synthetic free text vs int", list(zip(resps, map(str, golds))),
    expect=[bool(k % 2) for k in range(N)])

path = os.path.join(ROOT, "..", "shared", "data", "math500.jsonl")
if not os.path.exists(path):
    print(f"(skipping the MATH-500 and corpus rows: {path} not found)")
    raise SystemExit(0)
answers = [json.loads(line)["answer"] for line in open(path)]


def perturb(a: str, k: int) -> str:
    return [a, f"$ {a} $", a + "+1", a.replace("1", "7", 1) if "1" in a else a + "0"][k % 4]


pairs = [(f"Reasoning...\nFinal: \\boxed{{{perturb(answers[k % 500], k // 500)}}}",
          answers[k % 500]) for k in range(N)]
row("MATH-500 mix", pairs)
row("MATH-500 mix, caches cleared", pairs, clear=True)

sys.path.insert(0, os.path.join(ROOT, "tests"))
import verifier_corpus  # noqa: E402  (a test helper: builds the corpus from ../shared/data)

items = verifier_corpus.build()
row("agreement corpus, caches cleared", [(it["response"], it["gold"]) for it in items], clear=True)
