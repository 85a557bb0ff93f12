r"""
The RLSP reward, in decoupled parts (Ye et al. 2025, section 3; the authors' code: docs/rl.md).

    parts = score(reason_ids, correct, has_answer, cfg, coef, pieces=token_pieces(tok))
    parts["total"]            # (N,) the reward RL maximises; every part is logged separately

    total = outcome + explore + repetition (+ economy), clipped to [-clip, clip]

- outcome (the verifier, stage 3): 1 if correct, 0 if wrong, no_answer_penalty (paper: -0.5)
  when no final answer can be extracted.
- explore (stage 2): rlsp -coef / L (the paper: pays for longer reasoning, diminishing returns);
  rlsp_paper the authors' code's form, R = outcome - coef / L with L = characters before the
  first \boxed{...} / 4 (a float, floored at 1), outcome -0.5 for a reply with no box whatever a
  fallback extraction finds, and no repetition term (outcome is still the task's checker,
  which reads the last box; theirs read the first);
  linear coef * min(L, cap) / cap; cosine (Yeo et al. 2025) r_min + (r_max - r_min)
  (1 + cos(pi L / L_max)) / 2 with separate (r_min, r_max) for right and wrong answers and
  exceed_penalty past L_max, replacing the outcome term; none 0 (the verifier-only ablation).
  L = T - R is the *effective* reasoning length: padding buys no exploration reward.
- repetition: -rep_coef * R / T, R the tokens that only repeat earlier lines
  (nanorlsp/repetition.py: line_verdicts, repeated_tokens).
- economy: a group-relative length term for adaptive thinking (nanorlsp/economy.py, with the
  exploration coefficient's schedules); 0 under the default --economy none.
"""
import math
from dataclasses import dataclass

import torch

from nanorlsp.economy import (ECONOMY, SCHEDULES, adaptive_coefs, coef_at,  # noqa: F401
                              easy_rows, economy_part, economy_terms)
from nanorlsp.equivalence import MAX_ANSWER_LEN, _box_span
from nanorlsp.repetition import (line_verdicts, loop_tokens, repeated_tokens,  # noqa: F401
                                 token_pieces)

EXPLORE = ("rlsp", "rlsp_paper", "linear", "cosine", "none")


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
    # the group-relative length term (nanorlsp/economy.py); flip = the adaptive schedule's
    # sign-flipped exploration term on easy prompts
    economy: str = "none"
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
        if self.economy == "flip" and self.schedule == "adaptive" and \
                self.explore not in ("rlsp", "rlsp_paper", "linear"):
            raise ValueError(f"the adaptive schedule flips the sign of an rlsp or linear "
                             f"exploration reward, not {self.explore!r}")
        if self.schedule == "adaptive" and self.explore == "cosine":
            # cosine reads no coefficient: the adaptive schedule would change nothing
            raise ValueError("the adaptive schedule scales an rlsp or linear exploration reward, "
                             "not 'cosine'")


def first_box(text: str) -> int | None:
    r"""Where a reply's first \boxed{...} begins (one whose braces close, as a checker reads a
    box), or None: the authors' reward (rlsp_paper) measures L before it and pays -0.5 without
    one. At most MAX_ANSWER_LEN chars are scanned per box: model output is untrusted input."""
    i = text.find("\\boxed")
    while i >= 0:
        if _box_span(text, i, MAX_ANSWER_LEN):
            return i
        i = text.find("\\boxed", i + 1)
    return None


def score(reason_ids: list[list[int]], correct: list[bool], has_answer: list[bool],
          cfg: RewardConfig, coef, pieces=None, group_size: int | None = None,
          easy=None, texts: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Reward parts (module docstring) of N replies: (N,) outcome, explore, repetition, economy,
    total and eff_len (the L used). reason_ids: each reply's reasoning tokens; correct /
    has_answer: the verifier's verdicts; coef: a float or (N,); pieces: token_pieces(tok) for
    the repetition guard. group_size, easy: the economy term's (economy.economy_part); texts:
    what rlsp_paper reads instead of reason_ids (paper_row)."""
    N = len(reason_ids)
    coefs = coef.tolist() if torch.is_tensor(coef) else [coef] * N
    outcome, explore, repetition, eff = (torch.zeros(N) for _ in range(4))
    if cfg.explore == "rlsp_paper" and (texts is None or len(texts) != N):
        raise ValueError("the rlsp_paper reward reads the replies' texts: pass texts=")
    for i, ids in enumerate(reason_ids):
        if cfg.explore == "rlsp_paper":     # the authors' form (paper_row): no repetition guard
            outcome[i], explore[i], eff[i] = paper_row(texts[i], correct[i], coefs[i], cfg)
            continue
        rep = repeated_tokens(ids, cfg.rep_ngram, pieces)     # R: tokens that only repeat
        L = len(ids) - rep                                    # L = T - R, the effective length
        eff[i] = L
        repetition[i] = -cfg.rep_coef * rep / max(1, len(ids))
        outcome[i] = 1.0 if correct[i] else (0.0 if has_answer[i] else cfg.no_answer_penalty)
        if cfg.explore == "rlsp":                             # the paper's -lambda / L
            explore[i] = -coefs[i] / max(L, 1)
        elif cfg.explore != "none":                           # linear, cosine
            explore[i] = shaped_explore(cfg, L, coefs[i], correct[i], has_answer[i], outcome[i])
    econ = (torch.zeros(N) if cfg.economy in ("none", "flip") else   # adaptive thinking
            economy_part(reason_ids, correct, group_size, easy, cfg))
    total = (outcome + explore + repetition + econ).clamp(-cfg.clip, cfg.clip)
    return {"outcome": outcome, "explore": explore, "repetition": repetition, "economy": econ,
            "total": total, "eff_len": eff}


def shaped_explore(cfg: RewardConfig, L: int, coef: float, correct: bool, has_answer: bool,
                   outcome):
    """One reply's explore part under linear or cosine (module docstring); 0 for cosine
    without an answer (the outcome penalty stands alone)."""
    if cfg.explore == "linear":
        return coef * min(L, cfg.linear_cap) / cfg.linear_cap
    if not has_answer:
        return 0.0
    lo, hi = cfg.cos_correct if correct else cfg.cos_wrong
    if L > cfg.cos_max_len:
        r = cfg.exceed_penalty
    else:
        r = lo + (hi - lo) * (1 + math.cos(math.pi * L / cfg.cos_max_len)) / 2
    return r - outcome  # cosine replaces the outcome term


def paper_row(text: str, correct: bool, coef: float, cfg: RewardConfig):
    """rlsp_paper's (outcome, explore, L) of one reply: the authors' R = 1[correct] - lambda / L,
    -0.5 without a box (a right answer the fallback found included), L the characters before
    the first box / 4 (a token proxy, floored at 1)."""
    at = first_box(text)
    L = max(1.0, (len(text) if at is None else at) / 4)
    return (cfg.no_answer_penalty if at is None else float(correct)), -coef / L, L


def overlong_penalty(lengths: torch.Tensor, finish: list[str], max_new_tokens: int,
                     buffer: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), L_max = max_new_tokens, the
    last `buffer` tokens before it a linear ramp: 0 for |y| <= L_max - buffer, then
    (L_max - buffer - |y|) / buffer, down to -1 at the cap; a reply cut by the cap (finish
    "length") gets -1. lengths (N,) generated tokens -> (N,) float."""
    if not 0 < buffer < max_new_tokens:
        raise ValueError(f"the overlong buffer must be in 1..{max_new_tokens - 1}, got {buffer}")
    free = max_new_tokens - buffer
    pen = ((free - lengths.float()) / buffer).clamp(-1.0, 0.0)                     # (N,)
    cut = torch.tensor([f == "length" for f in finish], dtype=torch.bool)
    return torch.where(cut, torch.full_like(pen, -1.0), pen)
