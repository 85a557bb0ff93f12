"""
The RLSP reward, in decoupled parts (Ye et al. 2025, section 3; ../shared/docs/RLSP.md).

    parts = score(texts, reason_tokens, correct, has_answer, RewardConfig(), coef=cfg.coef)
    parts["total"]            # (N,) the reward RL maximises; every part is logged separately

    total = outcome + explore + repetition, clipped to [-clip, clip]

- outcome (the verifier, stage 3): 1 if correct, 0 if wrong, no_answer_penalty (paper: -0.5)
  when no final answer can be extracted.
- explore (stage 2), selectable:
    rlsp    -coef / L                (the paper: pays for longer reasoning, diminishing returns)
    linear  coef * min(L, cap) / cap (a capped bonus per reasoning token)
    cosine  Yeo et al. 2025: r_min + (r_max - r_min) (1 + cos(pi L / L_max)) / 2, with separate
            (r_min, r_max) for correct answers (short preferred) and wrong ones (long preferred),
            and exceed_penalty past L_max. Replaces the outcome term (it already grades
            correctness), as in the paper that proposed it.
    none    0                        (the verifier-only ablation)
  L is the *effective* reasoning length: reasoning tokens before the answer, minus the tokens
  that only repeat an earlier n-gram. Padding the reasoning with repeated text therefore buys no
  exploration reward at all.
- repetition: -rep_coef * (fraction of the reasoning's n-grams that repeat an earlier one), the
  anti-gaming guard against degenerate loops (the n-gram repetition penalty of Yeo et al.).

coef_at(step, acc) gives the exploration coefficient's schedule: constant, linear decay to 0
over schedule_steps, or switched off once the batch accuracy passes acc_threshold.

adaptive (beyond the paper: its open question of thinking time that adapts to difficulty):
adaptive_coefs gives every response its own coefficient from its prompt's group accuracy. A
prompt the group mostly fails (accuracy < acc_threshold) is hard: its responses get +coef, paid
for exploring as above. A prompt the group already solves is easy: -coef, the same term with its
sign flipped, so length costs instead of pays (rlsp: +coef / L, shorter is better; linear:
-coef * min(L, cap) / cap per token). Group accuracy is the difficulty signal RL has for free.
"""
import math
from dataclasses import dataclass

import torch

EXPLORE = ("rlsp", "linear", "cosine", "none")
SCHEDULES = ("constant", "linear", "threshold", "adaptive")


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
    exceed_penalty: float = -1.0
    rep_ngram: int = 8
    rep_coef: float = 1.0
    schedule: str = "constant"
    schedule_steps: int = 100
    acc_threshold: float = 0.9

    def __post_init__(self):
        if self.explore not in EXPLORE:
            raise ValueError(f"unknown exploration reward {self.explore!r} (choose from {', '.join(EXPLORE)})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})")
        if self.schedule == "adaptive" and self.explore not in ("rlsp", "linear"):
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
                   acc_threshold: float) -> torch.Tensor:
    """(N,) per-response coefficients of the adaptive schedule: +coef for the responses of a
    prompt whose group accuracy is below acc_threshold (hard: explore), -coef for the rest (easy:
    length costs). Rows are prompt-major groups of group_size, as the sampler returns them."""
    c = torch.tensor(correct, dtype=torch.float32).view(-1, group_size)       # (P, G)
    hard = c.mean(1, keepdim=True) < acc_threshold                            # (P, 1)
    return torch.where(hard, coef, -coef).expand_as(c).reshape(-1)


def repeated_tokens(ids: list[int], n: int) -> int:
    """How many tokens only repeat an earlier n-gram: a token counts once it closes an n-gram
    already seen. Linear time; a repeated line of k tokens costs k for every copy after the first."""
    seen, rep = set(), 0
    for i in range(n, len(ids) + 1):
        g = tuple(ids[i - n:i])
        if g in seen:
            rep += 1
        else:
            seen.add(g)
    return rep


def score(reason_ids: list[list[int]], correct: list[bool], has_answer: list[bool],
          cfg: RewardConfig, coef) -> dict[str, torch.Tensor]:
    """Reward parts for N responses. reason_ids: each response's reasoning tokens (before the
    final answer); correct / has_answer: the verifier's verdicts; coef: the exploration
    coefficient, one float or (N,) per response (adaptive_coefs). Returns (N,) float tensors:
    outcome, explore, repetition, total, and eff_len (the L used)."""
    N = len(reason_ids)
    coefs = coef.tolist() if torch.is_tensor(coef) else [coef] * N
    outcome, explore, repetition, eff = (torch.zeros(N) for _ in range(4))
    for i, ids in enumerate(reason_ids):
        rep = repeated_tokens(ids, cfg.rep_ngram)
        L = len(ids) - rep
        eff[i] = L
        n_grams = max(1, len(ids) - cfg.rep_ngram + 1)
        repetition[i] = -cfg.rep_coef * rep / n_grams
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
    total = (outcome + explore + repetition).clamp(-cfg.clip, cfg.clip)
    return {"outcome": outcome, "explore": explore, "repetition": repetition, "total": total,
            "eff_len": eff}
