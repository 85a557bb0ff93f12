"""
The RL objectives beyond the default REINFORCE step, each behind one flag of train_rl.py (the
per-token math is in nanorlsp/rl.py, the equations and sources in docs/rl.md):

    if objectives.active(s):   # any flag below on; else train_rl.py calls reinforce_update
        prompts, batch, sc = objectives.shape(prompts, batch, sc, sample, problems, step, s)
        out = objectives.update(policy, optimizer, batch, sc, s)   # picks the update
    shape: shape_rewards (--overlong_buffer, DAPO), then refill (--dynamic_sampling, DAPO);
    update: ppo.update, reinforce_update or clipped_update, --mask_truncated.

--policy_loss clip | gspo | cispo (clipped_update): GRPO as TRL runs it with num_iterations,
GSPO, CISPO; the old log-probs come from the training forward before the first update (as
ppo.update: the ratio is exactly 1 there), then --updates_per_batch passes over the batch, each
one optimizer_step, the KL term as in REINFORCE. --loss_agg weighs every objective's tokens
(rl.agg_weights). Footguns: --dynamic_sampling runs on one process only (a redrawn batch would
differ in size across ranks); GSPO's eps is ~1e-4, not PPO's 0.2 (train_rl.py's default for it).
"""
import argparse
import random
from dataclasses import replace

import torch

from nanorlsp import dist, ppo
from nanorlsp.common import UserError
from nanorlsp.rewards import overlong_penalty
from nanorlsp.rl import (TOKEN_LOSSES, agg_weights, group_advantages, informative_groups,
                         kl_penalty, token_logprobs_and_entropy, truncated_is_weights)
from nanorlsp.rlsp import Batch, build_sequences, optimizer_steps, reinforce_update


def clipped_update(policy, optimizer, batch: Batch, rewards: torch.Tensor, s) -> dict:
    """s.updates_per_batch optimizer steps on one batch with s.policy_loss's per-token loss
    (rl.TOKEN_LOSSES: clip, gspo, cispo) against the batch's old log-probs, eps_low = s.clip,
    eps_high = s.clip_high, plus kl_coef KL to the reference, aggregated by s.loss_agg. The group
    advantages as REINFORCE's. --tis_cap: min(pi_old / pi_rollout, cap) per token, fixed for the
    step (as ppo.update). Returns global_stats, the mean over the applied updates."""
    mask = batch.mask
    ref_logp, _ = policy.logprobs(batch, s.temperature, s.grad_accum, reference=True)  # (B, Tn)
    old_logp, _ = policy.logprobs(batch, s.temperature, s.grad_accum)                  # (B, Tn)
    adv = group_advantages(rewards, s.n_samples, s.baseline, s.std_norm)               # (B,)
    agg, units = agg_weights(mask, s.loss_agg, s.max_new_tokens)
    with torch.no_grad():
        logp_diff_sum = ((old_logp - batch.rollout_logp).abs() * mask).sum()
        tis = (truncated_is_weights(old_logp, batch.rollout_logp, mask, s.tis_cap)
               if s.tis_cap else mask)
    token_loss = TOKEN_LOSSES[s.policy_loss]

    def token_sums(rows, logits, _values):
        m = mask[rows]                                                             # (b, Tn)
        logp, ent = token_logprobs_and_entropy(logits / s.temperature, batch.tokens[rows], m,
                                               batch.vocab)
        pl, clipped = token_loss(logp, old_logp[rows], adv[rows], m, s.clip, s.clip_high)
        kl = kl_penalty(logp, ref_logp[rows], s.kl_estimator, m)                   # (b, Tn)
        loss = tis[rows] * pl + s.kl_coef * kl                                     # (b, Tn)
        return (agg[rows] * loss).sum(), dict(kl=kl.detach().sum(), entropy=ent,
                                              clip_frac=clipped.sum(),
                                              logp_diff=torch.zeros((), device=m.device))

    everything = torch.arange(len(batch.tokens))
    return optimizer_steps(policy, optimizer, batch, [everything] * s.updates_per_batch,
                           token_sums, s, logp_diff_sum, units)


def active(s) -> bool:
    """Whether any objective beyond the default REINFORCE step is on: PPO, --policy_loss,
    --loss_agg, DAPO's --overlong_buffer / --dynamic_sampling, --mask_truncated. Off,
    train_rl.py's loop calls rlsp.reinforce_update directly (what update would pick)."""
    return (s.algo == "ppo" or s.policy_loss != "reinforce" or s.loss_agg != "token_mean" or
            bool(s.overlong_buffer) or s.dynamic_sampling or s.mask_truncated)


def shape(prompts: list[dict], batch: Batch, sc: dict, sample, problems: list[dict], step: int,
          s):
    """A scored step through DAPO's shaping: shape_rewards (--overlong_buffer), then refill
    (--dynamic_sampling); each unchanged when its flag is off. Returns (prompts, batch, sc)."""
    sc = shape_rewards(batch, sc, s)
    return refill(prompts, batch, sc, sample, problems, step, s)


def update(policy, optimizer, batch: Batch, sc: dict, s) -> dict:
    """The step's update, picked by s.algo and s.policy_loss: ppo.update, reinforce_update or
    clipped_update. --mask_truncated: the rows cut at --max_new_tokens leave the loss (their
    mask is zeroed for the update only: the logged reward, acc, flat and truncated figures
    still count them). sc["figures"] (refill) and the overlong part's mean join the figures."""
    if s.mask_truncated:
        keep = torch.tensor([f != "length" for f in batch.finish], dtype=batch.mask.dtype,
                            device=batch.mask.device)
        batch = replace(batch, mask=batch.mask * keep[:, None])                   # (B, Tn)
    rewards = sc["total"].to(policy.d.device)
    figures = dict(sc.get("figures", {}))
    if "overlong" in sc:                     # --overlong_buffer: the part's global mean
        n = dist.all_sum(torch.tensor([float(sc["overlong"].sum()), float(len(batch.finish))],
                                      device=rewards.device))
        figures["overlong"] = (n[0] / n[1]).item()
    if s.algo == "ppo":
        out = ppo.update(policy, optimizer, batch, rewards, s)
    elif s.policy_loss == "reinforce":
        out = reinforce_update(policy, optimizer, batch, rewards, s)
    else:
        out = clipped_update(policy, optimizer, batch, rewards, s)
    return dict(out, **figures) if out["updates"] else out


# -----------------------------------------------------------------------------
# DAPO's reward shaping and dynamic sampling (Yu et al. 2025)

def shape_rewards(batch: Batch, sc: dict, s) -> dict:
    """--overlong_buffer N: DAPO's soft overlong punishment (rewards.overlong_penalty) added to
    the total as its own part, sc["overlong"] (B,) (update logs its global mean). Off (0): sc
    unchanged."""
    if not s.overlong_buffer:
        return sc
    pen = overlong_penalty(batch.lengths.cpu(), batch.finish, s.max_new_tokens, s.overlong_buffer)
    return dict(sc, overlong=pen, total=sc["total"] + pen.to(sc["total"].dtype))


def redraw_prompts(problems: list[dict], seed: int, step: int, k: int, n: int) -> list[dict]:
    """Redraw k of a step (k >= 1): n more prompts, a pure function of (seed, step, k), so
    --resume draws the same ones."""
    return random.Random(f"rl-{seed}-{step}-redraw{k}").sample(problems, n)


def solved_some(sc: dict, G: int) -> torch.Tensor:
    """(P,) bool: the groups DAPO keeps, some replies right and some wrong (rl.informative_groups
    on the verdicts). On accuracy, not the total: an exploration or repetition term makes an
    all-wrong group's totals differ, and it would never be dropped."""
    return informative_groups(torch.tensor([float(c) for c in sc["correct"]]), G)


def concat_groups(parts: list[tuple[list[dict], Batch, dict]], P: int):
    """The first P informative groups of the parts (in draw order) as one batch of one process:
    (prompts, Batch, sc) with keys 0..P*G-1. parts: (prompts, batch, sc) of each draw."""
    G = parts[0][1].group
    rows, prompts = [], []
    for k, (pr, b, sc) in enumerate(parts):
        for g in torch.nonzero(solved_some(sc, G)).flatten().tolist():
            if len(prompts) < P:
                prompts.append(pr[g])
                rows += [(k, g * G + j) for j in range(G)]
    take = [(parts[k][1], parts[k][2], i) for k, i in rows]   # (batch, sc, row) per kept row
    Tn = max(int(b.lengths[i]) for b, _, i in take)
    pad = lambda x: torch.nn.functional.pad(x[:Tn], (0, Tn - min(len(x), Tn)))  # noqa: E731
    tokens = torch.stack([pad(b.tokens[i]) for b, _, i in take])
    device = parts[0][1].seq.device
    prompt_ids = [parts[k][1].prompt_ids[i // G] for k, i in rows[::G]]
    seq, pos = build_sequences(prompt_ids, tokens.to(device), G, device)
    batch = replace(parts[0][1], problems=prompts, keys=list(range(len(take))),
                    prompt_ids=prompt_ids, tokens=tokens.to(device),
                    mask=torch.stack([pad(b.mask[i]) for b, _, i in take]),
                    rollout_logp=torch.stack([pad(b.rollout_logp[i]) for b, _, i in take]),
                    lengths=torch.stack([b.lengths[i] for b, _, i in take]),
                    finish=[b.finish[i] for b, _, i in take], seq=seq, pos=pos,
                    texts=[b.texts[i] for b, _, i in take])
    sc = {}
    for key, v in parts[0][2].items():
        if torch.is_tensor(v) and v.dim() == 1 and len(v) == len(parts[0][1].texts):
            sc[key] = torch.stack([c[key][i] for _, c, i in take])
        elif isinstance(v, list) and len(v) == len(parts[0][1].texts):
            sc[key] = [c[key][i] for _, c, i in take]
        else:
            sc[key] = v
    sc["acc"] = sum(sc["correct"]) / len(sc["correct"])
    return prompts, batch, sc


def refill(prompts: list[dict], batch: Batch, sc: dict, sample, problems: list[dict],
           step: int, s):
    """--dynamic_sampling (DAPO): the groups whose replies are all right or all wrong leave the
    batch (DAPO's filter, 0 < correct < G: solved_some) and more prompts are drawn
    (redraw_prompts; sample(prompts, step, k) -> (batch, sc) rolls them out and scores them, k
    keying its sampling seed) until s.prompts_per_step informative groups are in, or
    s.max_redraws redraws were made: then the step trains on the informative groups
    there are (none at all: on the first draw, whose advantages are 0, so only the KL trains).
    figures: prompts_drawn (all draws' prompts), dyn_groups (the groups trained on),
    flat_first_draw (the first draw's flat share, comparable with other runs' flat_groups). One
    process only (train_rl.py refuses it under torchrun). Each draw is scored on its own (the
    exploration schedule sees each draw's accuracy); the logged acc is the kept rows'. Off: the
    arguments unchanged."""
    if not s.dynamic_sampling:
        return prompts, batch, sc
    P, G = len(prompts), batch.group
    parts = [(prompts, batch, sc)]
    found = first = int(solved_some(sc, G).sum())
    for k in range(1, s.max_redraws + 1):
        if found >= P:
            break
        more = redraw_prompts(problems, s.seed, step, k, P)
        b, c = sample(more, step, k)
        parts.append((more, b, c))
        found += int(solved_some(c, G).sum())
    figures = dict(sc.get("figures", {}), prompts_drawn=P * len(parts), dyn_groups=min(found, P),
                   flat_first_draw=1 - first / P)   # the refilled batch's flat share reads ~0
    if found == 0 or (len(parts) == 1 and found == P):   # nothing to train on, or all of it
        return prompts, batch, dict(sc, figures=figures)
    prompts, batch, sc = concat_groups(parts, P)
    return prompts, batch, dict(sc, figures=figures)


def redraw_args(s, k: int):
    """s with the sampling seed of redraw k: the rollout's seed is s.seed * 100003 + step, so
    seed + 7919 k keys redraw k apart from every step's first draw."""
    return argparse.Namespace(**dict(vars(s), seed=s.seed + 7919 * k))


def check_flags(s, world: int):
    """train_rl.py's objective flags: their defaults resolved in s (--clip, --clip_high,
    --loss_agg) and the combinations that mean nothing refused (UserError, one line)."""
    gspo = s.policy_loss == "gspo"
    if s.clip is None:
        s.clip, s.clip_high = (3e-4, s.clip_high or 4e-4) if gspo else (0.2, s.clip_high)
    s.clip_high = s.clip if s.clip_high is None else s.clip_high
    s.loss_agg = s.loss_agg or ("seq_mean" if gspo else "token_mean")
    if s.algo == "ppo":
        for flag, value, default in (("policy_loss", s.policy_loss, "reinforce"),
                                     ("loss_agg", s.loss_agg, "token_mean"),
                                     ("updates_per_batch", s.updates_per_batch, 1)):
            if value != default:
                raise UserError(f"--{flag} {value} is for --algo reinforce (PPO has its own "
                                f"clipped loss, token mean and --ppo_epochs)")
        if s.clip_high != s.clip:
            raise UserError("--clip_high is for --policy_loss clip | gspo | cispo (PPO's clip "
                            "is symmetric: --clip)")
        if s.dynamic_sampling:
            raise UserError("--dynamic_sampling drops groups with no signal under a group "
                            "baseline; PPO's critic has one there: use --algo reinforce")
    if s.policy_loss == "reinforce" and s.updates_per_batch > 1:
        raise UserError(f"--updates_per_batch {s.updates_per_batch} reuses a batch off-policy: "
                        "REINFORCE has no ratio to correct it; use --policy_loss clip | gspo | "
                        "cispo")
    if s.clip_high < s.clip:
        raise UserError(f"--clip_high {s.clip_high:g} is below --clip {s.clip:g} (DAPO's "
                        "clip-higher raises the upper bound only)")
    if s.overlong_buffer >= s.max_new_tokens:
        raise UserError(f"--overlong_buffer {s.overlong_buffer} must be below --max_new_tokens "
                        f"{s.max_new_tokens} (the penalty ramps over the last N tokens)")
    if s.dynamic_sampling and world > 1:
        raise UserError("--dynamic_sampling runs on one process: under torchrun the ranks' "
                        "refilled batches would differ in size")
