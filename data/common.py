"""
Pieces every synthetic task shares: the train/test split rule and the trace-style report.

The split rule is a hash of the problem's canonical key, not of a seed: a problem belongs to the
test split forever, whatever seed generated it, so train and test are disjoint by construction
(no leakage even when a user regenerates the train set with another seed).
"""
import hashlib
import random

TEST_FRACTION = 0.1  # one problem in ten is reserved for the held-out split


def split_of(key: str) -> str:
    """'test' or 'train' for a problem's canonical key (stable across runs and machines)."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return "test" if h % 1000 < TEST_FRACTION * 1000 else "train"


def sample_problems(draw, split: str, n: int, seed: int, max_tries: int = 1000,
                    distinct: bool = True) -> list[dict]:
    """n problems of `split`, drawn by `draw(rng) -> problem dict` (with a "key").

    Deterministic per (split, seed). Rejection-samples against split_of, so both splits come from
    the same distribution. distinct=True (evaluation sets, RL prompts): no problem twice; raises
    when the generator cannot produce n distinct problems. distinct=False (SFT demonstrations):
    i.i.d. draws, so a level with few distinct problems (arith's 300 one-digit facts) keeps its
    share of the data instead of running out.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"{split}-{seed}")
    seen, out = set(), []
    tries = stale = 0   # stale: draws since the last new problem (a finite task runs out fast)
    while len(out) < n:
        tries += 1
        stale += 1
        if tries > max_tries * max(n, 1) or stale > max_tries * 20:
            raise RuntimeError(f"could only draw {len(out)} distinct {split} problems of {n}")
        p = draw(rng)
        if (distinct and p["key"] in seen) or split_of(p["key"]) != split:
            continue
        seen.add(p["key"])
        out.append(p)
        stale = 0
    return out


def boxed_start(response: str) -> int | None:
    """The index of the last \\boxed when its braces close (the answer the synthetic tasks'
    checkers read), else None."""
    from nanorlsp.verifier import last_boxed
    return response.rfind("\\boxed") if last_boxed(response) is not None else None


def pick_style(rng: random.Random, mix: dict[str, float]) -> str:
    """A trace style drawn from the documented mix {style: probability}."""
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def parse_styles(spec: str) -> dict[str, float | None]:
    """train_sft.py --styles: 'direct,steps' or 'direct=0.2,path=0.8' -> {style: weight, or None
    for the task's own share}. A ValueError on an empty list, a repeated style or a bad weight."""
    out = {}
    for item in spec.split(","):
        name, eq, w = item.strip().partition("=")
        if not name or name in out:
            raise ValueError(f"--styles {spec!r}: {'a repeated' if name else 'an empty'} style")
        try:
            out[name] = float(w) if eq else None
        except ValueError:
            raise ValueError(f"--styles {spec!r}: {w!r} is not a number") from None
        if eq and not out[name] > 0:   # also rejects nan
            raise ValueError(f"--styles {spec!r}: a weight must be > 0, got {w}")
    return out


def restrict_mix(task, mix: dict[str, float], styles: dict[str, float | None]) -> dict:
    """The mix over `styles` only, each at its given weight or its share in `mix` (pick_style
    normalises). For SFT data without some behaviours (the study's emergence test: arith with
    no check or backtrack traces)."""
    known = getattr(task, "STYLES", tuple(task.STYLE_MIX))
    out = {}
    for s, w in styles.items():
        if s not in known:
            raise ValueError(f"{task.NAME} has no style {s!r} (choose from {', '.join(known)})")
        if w is None and s not in task.STYLE_MIX:
            raise ValueError(f"{task.NAME} style {s!r} is not in the default mix: give its "
                             f"weight, {s}=W")
        out[s] = mix[s] if w is None else w
    return out


def check_styles(task, styles: dict[str, float | None]) -> dict[str, float | None]:
    """`styles` (parse_styles) if the task can draw its demonstrations from them; else a
    ValueError naming the problem (before a run writes anything)."""
    if not hasattr(task, "STYLE_MIX"):
        raise ValueError(f"--task {task.NAME}: --styles is for the synthetic tasks (a real "
                         "set's demonstrations are its rationales)")
    restrict_mix(task, task.STYLE_MIX, styles)
    return styles


def sft_examples(task, n: int, seed: int, split: str = "train",
                 styles: dict[str, float | None] | None = None) -> list[dict]:
    """n problems of `split`, each with a demonstration in a style drawn from the task's mix
    (restricted to `styles` when given: restrict_mix).

    Deterministic per (task, n, seed, split, styles). The test split's demonstrations serve the
    held-out SFT loss; its problems never appear in training (split_of).
    """
    rng = random.Random(f"{task.NAME}-sft-{split}-{seed}")
    rows = []
    for p in task.make_problems(split, n, seed, distinct=False):
        # a task may make the mix depend on the problem (arith: on its difficulty)
        mix = task.style_mix(p) if hasattr(task, "style_mix") else task.STYLE_MIX
        style = pick_style(rng, restrict_mix(task, mix, styles) if styles else mix)
        rows.append({**p, "style": style, "response": task.make_trace(p, style, rng)})
    return rows


def style_report(task, n: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Fraction, accuracy (exact checker) and mean length of each trace style in n SFT examples."""
    rows = task.make_sft_examples(n, seed=seed)
    report = {}
    for style in task.STYLE_MIX:
        rs = [r for r in rows if r["style"] == style]
        if not rs:
            continue
        ok = sum(task.check(r["response"], r) for r in rs)
        report[style] = dict(
            frac=len(rs) / len(rows),
            acc=ok / len(rs),
            mean_chars=sum(len(r["response"]) for r in rs) / len(rs),
        )
    return report


def print_report(task, n: int = 2000, seed: int = 0) -> None:
    print(f"task {task.NAME}: {n} SFT examples, seed {seed}")
    print(f"{'style':<12} {'fraction':>9} {'accuracy':>9} {'mean chars':>11}")
    for style, r in style_report(task, n, seed).items():
        print(f"{style:<12} {r['frac']:>9.3f} {r['acc']:>9.3f} {r['mean_chars']:>11.1f}")
