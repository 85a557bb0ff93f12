"""
How fast the outcome verifier grades: 10,000 responses, three ways.

    python bench_verifier.py

RL grades every rollout, so grading must cost microseconds, not the sampler's milliseconds.
1. synthetic RL responses ending in \\boxed{n} against integer golds (half right): the fast path
2. MATH-500 golds boxed in a response as themselves, as "$ a $", or perturbed ("+1" appended,
   a digit changed): the parser and exact / numeric comparison (needs ../shared/data)
3. the same as 2 with the verifier's caches cleared before every call: no reuse at all
"""
import json
import os
import random
import time

from nanorlsp import verifier as V

N = 10_000
rng = random.Random(0)
golds = [rng.randint(0, 10 ** 6) for _ in range(N)]
resps = [f"Let me work through this step by step.\n12 * 7 = 84, carry the 1...\n"
         f"So the answer is \\boxed{{{g if k % 2 else g + 1}}}." for k, g in enumerate(golds)]
t = time.perf_counter()
ok = [V.grade(r, str(g)) for r, g in zip(resps, golds)]
dt = time.perf_counter() - t
assert ok == [bool(k % 2) for k in range(N)]
label = "synthetic boxed{n} vs int"
print(f"{label:<34} {N} grades {dt:6.3f} s {dt / N * 1e6:6.0f} us/grade")

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "data",
                    "math500.jsonl")
if not os.path.exists(path):
    print(f"(skipping the MATH-500 rows: {path} not found)")
    raise SystemExit(0)
answers = [json.loads(line)["answer"] for line in open(path)]


def perturb(a: str, k: int) -> str:
    return [a, f"$ {a} $", a + "+1", a.replace("1", "7", 1) if "1" in a else a + "0"][k % 4]


pairs = [(f"Reasoning...\nFinal: \\boxed{{{perturb(answers[k % 500], k // 500)}}}",
          answers[k % 500]) for k in range(N)]
t = time.perf_counter()
ok = [V.grade(r, g) for r, g in pairs]
dt = time.perf_counter() - t
print(f"{'MATH-500 mix':<34} {N} grades {dt:6.3f} s {dt / N * 1e6:6.0f} us/grade ({sum(ok)} equal)")
t = time.perf_counter()
for r, g in pairs:
    V._normalize.cache_clear()
    V._parse.cache_clear()
    V.grade(r, g)
dt = time.perf_counter() - t
print(f"{'MATH-500 mix, caches cleared':<34} {N} grades {dt:6.3f} s {dt / N * 1e6:6.0f} us/grade")
