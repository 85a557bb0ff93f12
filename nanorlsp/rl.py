"""
The RL objectives of RLSP stage 2, written out as pure tensor math on (B, T) log-probs and
masks (B = P prompts x G samples, prompt-major; T response tokens); train_rl.py wires them in.
`mask` is 1 on generated tokens (stop token included), 0 on padding; every mean is over masked
tokens only, token-level (Dr. GRPO: a per-sequence mean would add a length bias).

REINFORCE, group baseline (RLOO / GRPO):  A_i = r_i - mean_{j in group} r_j ("mean"; "loo" leaves
    i out), optionally / (group std + eps);      L = - sum_{i,t} m_it A_i log pi(y_it) / sum m
PPO (Schulman et al. 2017, as OpenRLHF):  delta_t = r_t + gamma V_{t+1} - V_t,
    A_t = delta_t + gamma lambda A_{t+1},  R_t = A_t + V_t,  rho_t = exp(logp - logp_old)
    L_pi = - mean_t min(rho_t A_t, clip(rho_t, 1-eps, 1+eps) A_t)
    L_V  = 0.5 mean_t max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)
KL to the reference, log r = logp_ref - logp on y ~ pi: k1 = -log r (straight-through: k1's
    value, k2's gradient), k2 = (log r)^2 / 2 (grad KL(pi || ref)), k3 = (r - 1) - log r
    (grad KL(ref || pi), the *forward* KL, as TRL). truncated_is_weights: min(pi_train /
    pi_rollout, cap) per token (Yao et al. 2025). Derivations: docs/rl.md.
The peers' objectives (train_rl.py's --loss_agg, --policy_loss): agg_weights (token / sequence
    mean, Dr. GRPO's constant), clipped_token_loss (GRPO, DAPO's clip-higher), gspo_token_loss,
    cispo_token_loss, informative_groups (DAPO's dynamic sampling); equations in each docstring.
Footgun: log r is clamped to [-20, 20] before exp and k3 to [-10, 10] (inf * 0 = NaN on
padding); padding is zeroed with `where`, never multiplied.
"""
import math

import torch
import torch.nn as nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the positions where mask is 1 (0 if there are none)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor,
                   vocab_limit: int | None = None) -> torch.Tensor:
    """log pi(target) per position: logits (B, T, V), targets (B, T) -> (B, T), in float32.
    vocab_limit masks the padded embedding rows exactly as the sampler did, so these log-probs
    are of the same distribution the rollouts were drawn from."""
    logits = logits.float()
    if vocab_limit is not None and vocab_limit < logits.size(-1):
        logits = logits.masked_fill(torch.arange(logits.size(-1), device=logits.device)
                                    >= vocab_limit, float("-inf"))
    return torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)


def token_logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                               vocab_limit: int | None = None):
    """token_logprobs and the entropy *sum* over masked positions from one log-softmax (the
    update needs both; two (B, T, V) log-softmaxes cost a third of a tiny model's update).
    Returns (logp (B, T) with grad, entropy sum: a scalar without grad)."""
    logits = logits.float()
    if vocab_limit is not None and vocab_limit < logits.size(-1):
        logits = logits.masked_fill(torch.arange(logits.size(-1), device=logits.device)
                                    >= vocab_limit, float("-inf"))
    lsm = torch.log_softmax(logits, -1)                                 # (B, T, V)
    logp = lsm.gather(-1, targets[..., None]).squeeze(-1)
    with torch.no_grad():
        lp = lsm.detach()
        p = lp.exp()
        ent = -(p * lp.masked_fill(p == 0, 0.0)).sum(-1)                # 0 * -inf is not NaN
        return logp, (ent * mask).sum()


@torch.no_grad()
def entropy(logits: torch.Tensor, mask: torch.Tensor, vocab_limit: int | None = None) -> torch.Tensor:
    """Mean per-token entropy of the policy, -sum_v p log p, over masked positions, of the
    distribution the sampler draws from (vocab_limit masks the padded rows, as token_logprobs
    does). A logged statistic, not a loss term: computed without autograd, which would otherwise
    keep two more (B, T, V) float32 tensors alive through the backward pass."""
    logits = logits.float()
    if vocab_limit is not None and vocab_limit < logits.size(-1):
        logits = logits[..., :vocab_limit]
    logp = torch.log_softmax(logits, -1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask)


def group_advantages(rewards: torch.Tensor, group_size: int, baseline: str = "mean",
                     std_norm: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """Advantages (B,) from rewards (B,) in prompt-major groups of group_size samples."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.view(-1, group_size).float()                          # (P, G)
    if baseline == "mean":
        adv = r - r.mean(1, keepdim=True)
    elif baseline == "loo":
        if group_size < 2:
            raise ValueError("a leave-one-out baseline needs group_size >= 2")
        adv = (r - r.mean(1, keepdim=True)) * group_size / (group_size - 1)  # = r_i - mean_{j!=i}
    else:
        raise ValueError(f"unknown baseline {baseline!r} (mean | loo)")
    if std_norm:
        adv = adv / (r.std(1, keepdim=True) + eps) if group_size > 1 else adv
    return adv.view(-1)


def reinforce_loss(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """Token-level policy gradient: - sum m w A log pi / sum m. logp, mask (B, T); adv (B,);
    weights (B, T) optional per-token importance weights (truncated_is_weights), no gradient."""
    w = adv[:, None] if weights is None else adv[:, None] * weights
    return -masked_mean(w * logp, mask)


KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3",
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate (B, T) from sampled tokens' log-probs, as a loss term
    whose gradient is a KL's gradient (see the module docstring: k1 and k2 follow the reverse
    KL's, k3 the forward KL's). mask (B, T): positions where it is 0 are exactly 0."""
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)                   # log r
    if kind == "k1":
        k2 = 0.5 * log_ratio ** 2
        kl = -log_ratio.detach() + (k2 - k2.detach())   # value k1, gradient k2's
    elif kind == "k2":
        kl = 0.5 * log_ratio ** 2
    elif kind == "k3":
        kl = (log_ratio.exp() - 1 - log_ratio).clamp(-10.0, 10.0)
    else:
        raise ValueError(f"unknown KL estimator {kind!r} ({' | '.join(KL_ESTIMATORS)})")
    return kl if mask is None else torch.where(mask.bool(), kl, torch.zeros_like(kl))


def kl_value(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The k1 estimate -log r per token (B, T), no gradient, 0 on padding: the value PPO puts in
    the per-token reward (OpenRLHF, the paper's code)."""
    with torch.no_grad():
        kl = logp - ref_logp
        return torch.where(mask.bool(), kl, torch.zeros_like(kl))


def truncated_is_weights(logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """min(pi_train(y) / pi_rollout(y), cap) per token (B, T), no gradient, 0 on padding:
    truncated importance sampling for rollouts drawn from a slightly different copy of the
    policy (bf16, KV-cached) than the one the loss differentiates."""
    with torch.no_grad():
        w = (logp - rollout_logp).clamp(max=math.log(cap)).exp()
        return torch.where(mask.bool(), w, torch.zeros_like(w))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    rewards, values, mask: (B, T), responses left-aligned (mask 1 then 0). The value after a
    response's last token is 0 (the episode ends). Returns advantages and returns R = A + V,
    both (B, T) and 0 on padding."""
    B, T = rewards.shape
    adv = torch.zeros_like(values)
    next_adv = torch.zeros(B, device=values.device, dtype=values.dtype)
    next_val = torch.zeros(B, device=values.device, dtype=values.dtype)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_val - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * m
        # on padding, carry nothing back: the next real step sees V = 0, A = 0 after the end
        next_adv = a * m
        next_val = values[:, t] * m
    return adv, (adv + values) * mask


def ppo_policy_loss(logp, old_logp, adv, mask, clip: float = 0.2,
                    weights: torch.Tensor | None = None):
    """Clipped surrogate. logp/old_logp/mask (B, T); adv (B, T) (GAE) or (B,) (per sequence);
    weights (B, T) optional, no gradient: truncated_is_weights(old_logp, rollout_logp) multiply
    each token's clipped loss (veRL's and TRL's TIS). Returns (loss, clip_fraction: the share of
    tokens where the clipped branch was taken)."""
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(logp)
    ratio = (logp - old_logp).exp()
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip, 1 + clip) * adv
    surrogate = torch.minimum(unclipped, clipped)
    loss = -masked_mean(surrogate if weights is None else weights * surrogate, mask)
    clip_frac = masked_mean((clipped < unclipped).float(), mask)
    return loss, clip_frac


def value_loss(values, old_values, returns, mask, clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped value loss: 0.5 max((V - R)^2, (V_old + clip(V - V_old) - R)^2)."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2,
                                           (v_clipped - returns) ** 2), mask)


class WithValues(nn.Module):
    """A policy (and PPO's value head, if any) as one module: (B, T) ids -> logits (B, T, V) and
    values (B, T) or None. One module, so DDP averages the value head's gradients too. PPO's
    value head is a linear layer on the policy's final hidden state (train_rl.py)."""

    def __init__(self, model, head):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, idx, logits_at=None):
        if self.head is None:
            return self.model(idx, logits_at=logits_at), None
        logits, h = self.model(idx, return_hidden=True, logits_at=logits_at)
        # the value head in float32 even under bf16 autocast (a value's bf16 rounding is ~1e-2
        # at |V| ~ 2: the size of the GAE deltas it is meant to resolve)
        with torch.autocast(h.device.type, enabled=False):
            return logits, self.head(h.float()).squeeze(-1)


# -----------------------------------------------------------------------------
# the objectives train_rl.py picks with --loss_agg and --policy_loss (docs/rl.md)

LOSS_AGG = ("token_mean", "seq_mean", "constant")
POLICY_LOSSES = ("reinforce", "clip", "gspo", "cispo")


def agg_weights(mask: torch.Tensor, mode: str, max_new_tokens: int):
    """A loss aggregation as per-token weights and per-row units, so that
    L = sum_it w_it l_it / sum_i u_i stays exact when rows are split over micro-batches and
    ranks (sum both over all of them). mask (B, T) -> w (B, T), u (B,):
      token_mean: w = m,        u = |y_i|        (one mean over the batch's tokens; DAPO)
      seq_mean:   w = m / |y_i|, u = 1           (each reply's token mean, then the mean over
                                                  replies: GRPO as written, GSPO)
      constant:   w = m,        u = max_new_tokens   (Dr. GRPO: sum / (rows x max_new_tokens),
                                                  a reply's tokens weigh the same at any length)
    A row with no tokens (mask all 0) has u = 0 under seq_mean and constant too."""
    n = mask.sum(1)                                                    # (B,) tokens per row
    if mode == "token_mean":
        return mask, n
    if mode == "seq_mean":
        return mask / n.clamp(min=1)[:, None], (n > 0).to(mask.dtype)
    if mode == "constant":
        return mask, (n > 0).to(mask.dtype) * max_new_tokens
    raise ValueError(f"unknown loss aggregation {mode!r} ({' | '.join(LOSS_AGG)})")


def agg_loss(per_token: torch.Tensor, mask: torch.Tensor, mode: str,
             max_new_tokens: int) -> torch.Tensor:
    """per_token (B, T) losses aggregated by `mode` over one batch (agg_weights)."""
    w, u = agg_weights(mask, mode, max_new_tokens)
    return (w * per_token).sum() / u.sum().clamp(min=1)


def clipped_token_loss(logp, old_logp, adv, mask, clip: float, clip_high: float | None = None):
    """GRPO / DAPO's per-token clipped surrogate, rho_t = pi / pi_old (Shao et al. 2024; DAPO's
    clip-higher, Yu et al. 2025: eps_high >= eps_low):
        l_it = - min(rho_it A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) A_i)
    logp, old_logp, mask (B, T); adv (B,). Returns (l (B, T), clipped (B, T): 1 where the
    clipped branch is the smaller one, no gradient there), both 0 on padding. At rho = 1
    (the first update) the gradient is REINFORCE's, - A grad log pi."""
    return _clipped_surrogate((logp - old_logp).clamp(-20.0, 20.0).exp(), adv, mask, clip,
                              clip if clip_high is None else clip_high)


def _clipped_surrogate(ratio, adv, mask, lo: float, hi: float):
    """-min(ratio A, clip(ratio, 1 - lo, 1 + hi) A) and where the clipped branch is the smaller,
    both (B, T), 0 on padding; ratio (B, T), adv (B,)."""
    a = adv[:, None]
    unclipped, clipped = ratio * a, ratio.clamp(1 - lo, 1 + hi) * a
    loss = -torch.minimum(unclipped, clipped)
    zero = torch.zeros_like(loss)
    return (torch.where(mask.bool(), loss, zero),
            torch.where(mask.bool(), (clipped < unclipped).float(), zero).detach())


def gspo_token_loss(logp, old_logp, adv, mask, clip: float, clip_high: float | None = None):
    """GSPO (Zheng et al. 2025): one importance ratio per reply, the geometric mean of its
    tokens' ratios, s_i = exp(mean_t (log pi - log pi_old)), clipped:
        l_i = - min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)
    written per token as GSPO-token (s_it = sg(s_i) pi_t / sg(pi_t): the value s_i on every
    token, the gradient s_i grad log pi_t), so a reply's token mean (--loss_agg seq_mean) is
    exactly GSPO's l_i and its gradient. The paper's eps is small (3e-4 / 4e-4): it clips a
    sequence's *mean* log-ratio. Returns (l (B, T), clipped (B, T)) as clipped_token_loss."""
    n = mask.sum(1).clamp(min=1)                                             # (B,)
    dlogp = torch.where(mask.bool(), logp - old_logp, torch.zeros_like(logp))
    log_s = (dlogp.sum(1) / n).detach()                                      # (B,) log s_i
    log_st = (log_s[:, None] + logp - logp.detach()).clamp(-20.0, 20.0)      # (B, T)
    return _clipped_surrogate(log_st.exp(), adv, mask, clip,
                              clip if clip_high is None else clip_high)


def cispo_token_loss(logp, old_logp, adv, mask, clip: float, clip_high: float | None = None):
    """CISPO (MiniMax-M1, Chen et al. 2025): every token keeps its gradient, weighted by a
    clipped importance weight that carries none:
        l_it = - sg(clip(rho_it, 1 - eps_low, 1 + eps_high)) A_i log pi(y_it)
    (PPO's clip drops the gradient of a clipped token; CISPO only bounds its weight. The paper
    sets no lower bound: a large eps_low.) Returns (l (B, T), clipped (B, T): 1 where the weight
    was clipped), both 0 on padding."""
    hi = clip if clip_high is None else clip_high
    with torch.no_grad():
        ratio = (logp - old_logp).clamp(-20.0, 20.0).exp()
        w = ratio.clamp(1 - clip, 1 + hi)
        was_clipped = ((ratio < 1 - clip) | (ratio > 1 + hi)).float()
    loss = -w * adv[:, None] * logp
    zero = torch.zeros_like(loss)
    return torch.where(mask.bool(), loss, zero), torch.where(mask.bool(), was_clipped, zero)


TOKEN_LOSSES = {"clip": clipped_token_loss, "gspo": gspo_token_loss, "cispo": cispo_token_loss}


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(P,) bool: the groups whose rewards (or any per-row values) are not all equal. A group of
    equal rewards has every advantage 0 (its baseline is its mean) and carries no signal; DAPO's
    dynamic sampling (Yu et al. 2025) drops the groups whose verdicts are all equal
    (objectives.solved_some passes them here)."""
    r = rewards.view(-1, group_size)                                   # (P, G)
    return ~(r == r[:, :1]).all(1)
