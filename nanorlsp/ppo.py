"""
PPO for RLSP (Schulman et al. 2017, as the paper's OpenRLHF setup): the value head, GAE with
advantage whitening, and the epoch x minibatch update loop. The per-token math (gae,
ppo_policy_loss, value_loss) is in nanorlsp/rl.py; the optimizer step in nanorlsp/rlsp.py.

    python train_rl.py --algo ppo --out_dir out/rl_ppo
    out = ppo.update(policy, optimizer, batch, rewards, s)     # instead of reinforce_update

Per token: r_t = -kl_coef k1_t, plus the reply's reward on its last token; A, R = GAE(r, V_old)
with A whitened over the global batch's tokens; then s.ppo_epochs x s.minibatches updates of
    L = L_clip(pi / pi_old, A) + vf_coef L_V        (nanorlsp/rl.py writes both out)
Footguns: the old log-probs and values come from the training forward (as OpenRLHF and veRL
recompute them), not the sampler's copy, so the ratio is exactly 1 before the first update;
minibatch k is this rank's rows of prompts k*C .. (k+1)*C - 1 (rlsp.my_prompts), so
--prompts_per_step must be a multiple of minibatches x ranks; a non-finite minibatch stops the
step and the minibatches before it stay applied (the step is logged with `partial`).
"""
import torch
import torch.nn as nn

from nanorlsp import dist
from nanorlsp.rl import (gae, kl_penalty, kl_value, ppo_policy_loss, token_logprobs_and_entropy,
                         truncated_is_weights, value_loss)
from nanorlsp.rlsp import optimizer_steps


def value_head(n_embd: int, device) -> nn.Linear:
    """V(h): a linear layer on the policy's final hidden state (a shared trunk, no second model
    copy in memory), trained with the policy in one backward, in float32 (rl.WithValues)."""
    return nn.Linear(n_embd, 1).to(device)


def advantages(batch, rewards, old_logp, old_values, ref_logp, s):
    """(adv, returns), both (B, Tn): GAE on per-token rewards (the KL penalty on every token, the
    reply's reward on its last), the advantages whitened over the global batch's tokens
    (OpenRLHF does the same)."""
    mask = batch.mask
    with torch.no_grad():
        tok_rew = -s.kl_coef * kl_value(old_logp, ref_logp, mask)                 # (B, Tn)
        last = (batch.lengths - 1).clamp(min=0).to(mask.device)
        tok_rew[torch.arange(len(last)), last] += rewards
        adv, returns = gae(tok_rew, old_values, mask, s.gamma, s.gae_lambda)
        sm = dist.all_sum(torch.stack([(adv * mask).sum(), mask.sum()]))
        n = sm[1].clamp(min=1)        # --mask_truncated can leave a step no loss token
        mu = sm[0] / n
        var = dist.all_sum(((adv - mu) ** 2 * mask).sum()) / n
        return (adv - mu) / (var.sqrt() + 1e-6) * mask, returns


def update(policy, optimizer, batch, rewards: torch.Tensor, s) -> dict:
    """The PPO step: old log-probs and values, advantages, then s.ppo_epochs passes over
    s.minibatches minibatches (rlsp.optimizer_steps). Returns global_stats with the mean over
    the applied updates (updates: how many; skipped: a non-finite one stopped the step)."""
    mask = batch.mask
    ref_logp, _ = policy.logprobs(batch, s.temperature, s.grad_accum, reference=True)
    old_logp, old_values = policy.logprobs(batch, s.temperature, s.grad_accum, values=True)
    with torch.no_grad():
        logp_diff_sum = ((old_logp - batch.rollout_logp).abs() * mask).sum()
        # --tis_cap: min(pi_old / pi_rollout, cap) per token, fixed for the step's epochs, on
        # the clipped objective's per-token loss (veRL, TRL)
        tis = (truncated_is_weights(old_logp, batch.rollout_logp, mask, s.tis_cap)
               if s.tis_cap else None)
    adv, returns = advantages(batch, rewards, old_logp, old_values, ref_logp, s)

    def token_sums(rows, logits, values):
        m = mask[rows]
        logp, ent = token_logprobs_and_entropy(logits / s.temperature, batch.tokens[rows], m,
                                               batch.vocab)
        pl, cf = ppo_policy_loss(logp, old_logp[rows], adv[rows], m, s.clip,
                                 None if tis is None else tis[rows])
        vl = value_loss(values, old_values[rows], returns[rows], m, s.value_clip)
        n = m.sum()
        return (pl + s.vf_coef * vl) * n, dict(
            kl=kl_penalty(logp.detach(), ref_logp[rows], "k3", m).sum(), entropy=ent,
            clip_frac=cf * n, logp_diff=torch.zeros((), device=m.device))

    c = len(batch.tokens) // s.minibatches                    # rows per minibatch
    minibatches = [torch.arange(k * c, (k + 1) * c) for k in range(s.minibatches)]
    return optimizer_steps(policy, optimizer, batch, minibatches * s.ppo_epochs, token_sums, s,
                           logp_diff_sum)
