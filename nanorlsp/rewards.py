"""
The RLSP reward, in decoupled parts (Ye et al. 2025, section 3; ../shared/docs/RLSP.md).

    pieces = token_pieces(tok)            # once: every token's bytes (where lines end)
    parts = score(reason_ids, correct, has_answer, cfg, coef, pieces=pieces)   # cfg: RewardConfig
    parts["total"]            # (N,) the reward RL maximises; every part is logged separately

    total = outcome + explore + repetition, clipped to [-clip, clip]

- outcome (the verifier, stage 3): 1 if correct, 0 if wrong, no_answer_penalty (paper: -0.5)
  when no final answer can be extracted.
- explore (stage 2), selectable:
    rlsp    -coef / L                (the paper: pays for longer reasoning, diminishing returns)
    linear  coef * min(L, cap) / cap (a capped bonus per reasoning token)
    cosine  Yeo et al. 2025: r_min + (r_max - r_min) (1 + cos(pi L / L_max)) / 2, with separate
            (r_min, r_max) for correct answers (short preferred) and wrong ones (long preferred),
            and exceed_penalty past L_max (no_answer_penalty <= exceed_penalty <= the curve's
            lowest value: a boxed reply that ran long is never worse than no box, and running
            past L_max never pays). Replaces the outcome term (it already grades correctness),
            as in the paper that proposed it.
    none    0                        (the verifier-only ablation)
  L is the *effective* reasoning length, L = T - R: the T reasoning tokens before the answer
  minus the R that only repeat earlier text (repeated_tokens). Padding buys no exploration reward.
- repetition: -rep_coef * R / T, the anti-gaming guard against degenerate loops (after the
  n-gram repetition penalty of Yeo et al.).

R is counted on lines (line_verdicts), not on n-grams. An 8-gram guard counted a search's own
vocabulary as repetition: countdown's distinct search lines share most of their tokens ("try
17*3=51 -> [5, 51]", "try 17*5=85 -> [3, 85]", "... no", "backtrack"), so correct searches of
~760 tokens scored -0.048 and of ~340 tokens -0.021, far more than rlsp's -0.5 / L there (-0.0007,
-0.0015): the total reward fell as a search got longer. On lines, a search's distinct steps are new,
its "backtrack"s and the leaves of a state it reaches by a second path are revisits (free), and
a repeated line, a copied block, a loop of one state and whitespace-only variants repeat; every
SFT demonstration of both tasks scores R = 0 (tests/test_rewards.py). Lines come from the token
pieces (a token holding a newline ends one); without pieces, R falls back to the 8-gram count.

coef_at(step, acc) gives the exploration coefficient's schedule: constant, linear decay to 0
over schedule_steps, or switched off once the batch accuracy passes acc_threshold.

adaptive (beyond the paper: its open question of thinking time that adapts to difficulty):
adaptive_coefs gives every response its own coefficient from its prompt's group accuracy. A
prompt the group mostly fails (accuracy < acc_threshold) is hard: its responses get +coef, paid
for exploring as above. A prompt the group already solves is easy: -coef, the same term with its
sign flipped, so length costs instead of pays (rlsp: +coef / L, shorter is better; linear:
-coef * min(L, cap) / cap per token). Group accuracy is the difficulty signal RL has for free.

economy (adaptive thinking that keeps accuracy, issue 18): a length term computed from the
prompt's group (rows are prompt-major groups of G), added as its own part "economy". With
--explore_schedule adaptive it replaces the flipped exploration term on the easy prompts (the
hard ones keep RLSP's pay for exploring); with any other schedule it applies to every prompt.
T_i is the reply's reasoning length in tokens (raw: padding costs too), c_i its verdict.
    flip    the adaptive schedule's own term: the exploration term with its sign flipped (above)
    kimi    Kimi k1.5 (Kimi Team 2025, eq. 3): lambda_i = 0.5 - (T_i - T_min) / (T_max - T_min)
            over the group (0 when all lengths are equal); economy_i = w lambda_i if c_i else
            w min(0, lambda_i). Among right replies shorter earns more; a wrong reply is never
            paid for being short.
    alp     Adaptive Length Penalty (Xiang et al. 2025): economy_i = -w T_i max(p, 1/G), p the
            group's solve rate: the per-token price grows with how easy the prompt is (1/G
            keeps a price on prompts no reply solved). w is per token.
    budget  ours, the shortest-right budget: on a group with a right reply, a right reply pays
            for the share of its length beyond the group's shortest right reply,
            economy_i = -w (T_i - T*) / T_i, T* = min over right replies (0 for wrong replies and
            for groups with none right). Why: kimi's spread is relative to the group's range, so
            40 vs 41 tokens swings +-0.5 as much as 40 vs 400, and it grades wrong replies too;
            alp's price is linear in T, so it charges the tokens a hard sum needs as much as
            padding on an easy one. The budget charges only length the group showed to be
            unnecessary (a right reply exists that was shorter), in [0, w), and never touches
            a prompt the policy cannot yet solve.
"""
import math
from collections import Counter
from dataclasses import dataclass

import torch

EXPLORE = ("rlsp", "linear", "cosine", "none")
SCHEDULES = ("constant", "linear", "threshold", "adaptive")
ECONOMY = ("none", "flip", "kimi", "alp", "budget")


@dataclass
class RewardConfig:
    explore: str = "rlsp"
    # lambda. A direct answer has L = 0 (floored to 1), so rlsp pays it -coef: coef < 1 keeps a
    # correct direct answer (1 - coef) above any wrong one, i.e. exploration "comparable to, but
    # smaller than, the correctness term" (RLSP.md). At 0.5: -0.025 at L = 20, -0.005 at 100.
    coef: float = 0.5
    no_answer_penalty: float = -0.5
    clip: float = 10.0
    linear_cap: int = 128          # linear: the bonus stops growing after this many tokens
    cos_correct: tuple = (0.5, 1.0)   # cosine: (r at L_max, r at L = 0) for correct answers
    cos_wrong: tuple = (0.0, -0.5)    # ... and for wrong ones (longer is less bad)
    cos_max_len: int = 256
    # past L_max. Never below no_answer_penalty (else stopping without a box beats a boxed reply
    # that ran long) and never above the curve's lowest value (else running past L_max pays):
    # no_answer_penalty <= exceed_penalty <= min(cos_correct + cos_wrong), here -0.5 all three
    exceed_penalty: float = -0.5
    rep_ngram: int = 8             # loop_tokens' n: loops inside a line (all of R without pieces)
    rep_coef: float = 1.0
    schedule: str = "constant"
    schedule_steps: int = 100
    acc_threshold: float = 0.9
    # the group-relative length term (see the module docstring); flip = the adaptive schedule's
    # sign-flipped exploration term on easy prompts, as before economy existed
    economy: str = "flip"
    economy_coef: float = 0.1      # w: kimi's weight, alp's per-token price, budget's cap

    def __post_init__(self):
        if self.explore not in EXPLORE:
            raise ValueError(f"unknown exploration reward {self.explore!r} (choose from {', '.join(EXPLORE)})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})")
        lowest = min(*self.cos_correct, *self.cos_wrong)
        if self.explore == "cosine" and not self.no_answer_penalty <= self.exceed_penalty <= lowest:
            raise ValueError(f"the cosine reward needs no_answer_penalty <= exceed_penalty <= its "
                             f"lowest value, got {self.no_answer_penalty} <= {self.exceed_penalty} "
                             f"<= {lowest}")
        if self.economy not in ECONOMY:
            raise ValueError(f"unknown economy term {self.economy!r} (choose from {', '.join(ECONOMY)})")
        if self.economy == "flip" and self.schedule == "adaptive" and self.explore not in ("rlsp", "linear"):
            raise ValueError(f"the adaptive schedule flips the sign of an rlsp or linear "
                             f"exploration reward, not {self.explore!r}")


def coef_at(cfg: RewardConfig, step: int, batch_acc: float | None = None) -> float:
    """The exploration coefficient at an RL step under cfg.schedule."""
    if cfg.schedule == "linear":
        return cfg.coef * max(0.0, 1.0 - step / max(1, cfg.schedule_steps))
    if cfg.schedule == "threshold" and batch_acc is not None and batch_acc >= cfg.acc_threshold:
        return 0.0
    return cfg.coef


def adaptive_coefs(correct: list[bool], group_size: int, coef: float,
                   acc_threshold: float, easy_coef: float | None = None) -> torch.Tensor:
    """(N,) per-response coefficients of the adaptive schedule: +coef for the responses of a
    prompt whose group accuracy is below acc_threshold (hard: explore), easy_coef for the rest
    (default -coef: length costs; 0 when an economy term takes the easy prompts instead). Rows
    are prompt-major groups of group_size, as the sampler returns them."""
    easy = easy_rows(correct, group_size, acc_threshold)
    return torch.where(easy, -coef if easy_coef is None else easy_coef, coef)


def easy_rows(correct: list[bool], group_size: int, acc_threshold: float) -> torch.Tensor:
    """(N,) bool: the rows of prompts whose group accuracy reaches acc_threshold (easy)."""
    c = torch.tensor(correct, dtype=torch.float32).view(-1, group_size)       # (P, G)
    return (c.mean(1, keepdim=True) >= acc_threshold).expand_as(c).reshape(-1)


# -----------------------------------------------------------------------------
# the repetition guard: which reasoning tokens only repeat earlier text

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


def economy_terms(lengths: torch.Tensor, correct: torch.Tensor, group_size: int,
                  cfg: RewardConfig) -> torch.Tensor:
    """(N,) economy part for N replies in prompt-major groups of group_size: lengths (N,) reasoning
    tokens, correct (N,) bool (module docstring: kimi, alp, budget; flip and none give 0 here)."""
    N = lengths.numel()
    if cfg.economy in ("none", "flip"):
        return torch.zeros(N)
    if N % group_size:
        raise ValueError(f"{N} replies do not split into groups of {group_size}")
    T = lengths.float().view(-1, group_size)                              # (P, G)
    c = correct.view(-1, group_size).bool()                               # (P, G)
    w = cfg.economy_coef
    if cfg.economy == "kimi":
        lo, hi = T.min(1, keepdim=True).values, T.max(1, keepdim=True).values
        lam = torch.where(hi > lo, 0.5 - (T - lo) / (hi - lo).clamp(min=1e-9), torch.zeros_like(T))
        out = w * torch.where(c, lam, lam.clamp(max=0.0))
    elif cfg.economy == "alp":
        p = c.float().mean(1, keepdim=True)                               # (P, 1) solve rate
        out = -w * T * p.clamp(min=1.0 / group_size)
    else:  # budget
        best = torch.where(c, T, torch.full_like(T, float("inf"))).min(1, keepdim=True).values
        out = torch.where(c, -w * (T - best) / T.clamp(min=1.0), torch.zeros_like(T))
    return out.reshape(-1)


def score(reason_ids: list[list[int]], correct: list[bool], has_answer: list[bool],
          cfg: RewardConfig, coef, pieces=None, group_size: int | None = None,
          easy=None) -> dict[str, torch.Tensor]:
    """Reward parts for N responses. reason_ids: each response's reasoning tokens (before the
    final answer); correct / has_answer: the verifier's verdicts; coef: the exploration
    coefficient, one float or (N,) per response (adaptive_coefs); pieces: token_pieces(tok), the
    line structure for the repetition guard (None: the plain 8-gram guard, which penalises a
    search's shared vocabulary). group_size: G, for the economy term (needed unless
    cfg.economy is none / flip); easy: (N,) bool, the rows it applies to (the adaptive schedule's
    easy prompts; None: every row). Returns (N,) float tensors: outcome, explore, repetition
    (-rep_coef * R / T), economy, total, and eff_len (the L = T - R used)."""
    N = len(reason_ids)
    coefs = coef.tolist() if torch.is_tensor(coef) else [coef] * N
    outcome, explore, repetition, eff = (torch.zeros(N) for _ in range(4))
    for i, ids in enumerate(reason_ids):
        rep = repeated_tokens(ids, cfg.rep_ngram, pieces)
        L = len(ids) - rep
        eff[i] = L
        repetition[i] = -cfg.rep_coef * rep / max(1, len(ids))
        outcome[i] = 1.0 if correct[i] else (0.0 if has_answer[i] else cfg.no_answer_penalty)
        if cfg.explore == "rlsp":
            explore[i] = -coefs[i] / max(L, 1)
        elif cfg.explore == "linear":
            explore[i] = coefs[i] * min(L, cfg.linear_cap) / cfg.linear_cap
        elif cfg.explore == "cosine":
            if not has_answer[i]:
                continue  # no answer: the outcome penalty stands alone
            lo, hi = cfg.cos_correct if correct[i] else cfg.cos_wrong
            if L > cfg.cos_max_len:
                r = cfg.exceed_penalty
            else:
                r = lo + (hi - lo) * (1 + math.cos(math.pi * L / cfg.cos_max_len)) / 2
            explore[i] = r - outcome[i]  # cosine replaces the outcome term
    econ = torch.zeros(N)
    if cfg.economy not in ("none", "flip"):
        if group_size is None:
            raise ValueError(f"the {cfg.economy} economy term needs the group size")
        econ = economy_terms(torch.tensor([len(x) for x in reason_ids]),
                             torch.tensor(correct, dtype=torch.bool), group_size, cfg)
        if easy is not None:
            econ = torch.where(torch.as_tensor(easy, dtype=torch.bool), econ, torch.zeros(N))
    total = (outcome + explore + repetition + econ).clamp(-cfg.clip, cfg.clip)
    return {"outcome": outcome, "explore": explore, "repetition": repetition, "economy": econ,
            "total": total, "eff_len": eff}
