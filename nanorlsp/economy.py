"""
Adaptive thinking (beyond the paper: its open question of thinking time that adapts to difficulty):
per-prompt coefficients, economy length terms, a step's coefficient (schedule + latch) in one call.

    coef, easy = explore.at(step, acc, correct)     # ExploreSchedule(cfg, G, latched)
    parts = rewards.score(..., coef, group_size=G, easy=easy)    # economy_terms on `easy` rows

adaptive (--explore_schedule adaptive): a prompt the group mostly fails (accuracy <
acc_threshold) gets +coef (paid for exploring); on one it solves, --economy flip gives -coef,
kimi / alp / budget the term below, none (the default) nothing. Without the adaptive schedule an
economy term applies to every prompt. T_i: a reply's reasoning tokens (raw: padding costs too),
c_i its verdict, w the --economy_coef:
    kimi    (Kimi k1.5, eq. 3) lambda_i = 0.5 - (T_i - T_min) / (T_max - T_min) over the group;
            economy_i = w lambda_i if c_i else w min(0, lambda_i)
    alp     (Xiang et al. 2025) economy_i = -w T_i max(p, 1/G), p the group's solve rate
    budget  (ours) economy_i = -w (T_i - T*) / T_i if c_i else 0, T* the shortest right reply
Why each, and what they measured: docs/rl.md.
Footgun: the threshold schedule's switch-off is a latch (once off, off for the rest of the run,
saved in the checkpoint as explore_off): state, not a function of the step.
"""
import torch

SCHEDULES = ("constant", "linear", "threshold", "adaptive")
ECONOMY = ("none", "flip", "kimi", "alp", "budget")


def coef_at(cfg, step: int, batch_acc: float | None = None) -> float:
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


def economy_terms(lengths: torch.Tensor, correct: torch.Tensor, group_size: int,
                  cfg) -> torch.Tensor:
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


def economy_part(reason_ids: list[list[int]], correct: list[bool], group_size: int | None,
                 easy, cfg) -> torch.Tensor:
    """rewards.score's (N,) economy part under kimi, alp or budget (score gives 0 under none /
    flip without calling it): economy_terms on the reasoning lengths, on the `easy` rows only
    (None: every row)."""
    N = len(reason_ids)
    if group_size is None:
        raise ValueError(f"the {cfg.economy} economy term needs the group size")
    econ = economy_terms(torch.tensor([len(x) for x in reason_ids]),
                         torch.tensor(correct, dtype=torch.bool), group_size, cfg)
    if easy is not None:
        econ = torch.where(torch.as_tensor(easy, dtype=torch.bool), econ, torch.zeros(N))
    return econ


class ExploreSchedule:
    """The exploration coefficient of each step, in one call: the schedule (coef_at), the
    threshold schedule's latch (off once the batch accuracy reaches the threshold, for the rest
    of the run: `latched` is saved with the checkpoint) and the adaptive schedule's per-row
    coefficients and easy rows."""

    def __init__(self, cfg, group_size: int, latched: bool = False):
        self.cfg, self.G, self.latched = cfg, group_size, latched

    def at(self, step: int, acc: float, correct: list[bool]):
        """(coef: the step's coefficient, a float; row_coef: a float or (N,) per row; easy: (N,)
        bool or None, the rows an economy term applies to). acc: the global batch's accuracy."""
        if self.cfg.schedule == "constant" and not self.latched:   # the default: lambda, always
            return self.cfg.coef, self.cfg.coef, None
        return self.scheduled(step, acc, correct)

    def scheduled(self, step: int, acc: float, correct: list[bool]):
        """at() under the linear, threshold and adaptive schedules."""
        cfg = self.cfg
        coef = 0.0 if self.latched else coef_at(cfg, step, acc)
        self.latched = self.latched or (cfg.schedule == "threshold" and coef == 0.0)
        if cfg.schedule != "adaptive":
            return coef, coef, None
        # hard prompts explore (+coef); easy ones pay the economy term, or with flip the
        # exploration term's sign-flipped twin (-coef)
        easy = easy_rows(correct, self.G, cfg.acc_threshold)
        row_coef = adaptive_coefs(correct, self.G, coef, cfg.acc_threshold,
                                  easy_coef=None if cfg.economy == "flip" else 0.0)
        return coef, row_coef, easy
