"""
One RLSP step as named phases over one Batch: train_rl.py's loop calls them in order, and
notebook 04 calls them cell by cell.

    batch = rollout(policy, tok, prompts, mine, s, step)     # G replies per prompt, decoded
    sc = score(batch, task, tok, explore, step, pieces)      # verifier + exploration + repetition
    out = reinforce_update(policy, optimizer, batch, sc["total"], s)    # or ppo.update(...)
    rec, rows = step_record(batch, sc, out, timings, task_name, d)     # the logged figures

reinforce_update writes the objective out (group-baseline REINFORCE, Ye et al. 2025 sec. 3):
    A_i = r_i - mean_{j in group} r_j,   L = sum_it w_it (-A_i log pi(y_it) + kl_coef KL_k3) / N
    w_it = m_it, N = sum m (--loss_agg token_mean; seq_mean, constant: rl.agg_weights)
optimizer_step runs one update under either objective: --grad_accum micro-batches, each loss a
token sum over the global token count, the non-finite guard, clipping, AdamW.
s: train_rl.py's args (any object with its flags' attributes). Footguns: rows are prompt-major
groups of G and a group never crosses ranks (the baseline is its mean); a non-finite loss or
gradient on any rank skips the update on every rank.
"""
import random
from dataclasses import dataclass

import torch

from nanorlsp import dist
from nanorlsp.behaviors import frequencies
from nanorlsp.evaluation import prompt_lengths, render
from nanorlsp.rewards import first_box, score as reward_parts
from nanorlsp.rl import (agg_weights, group_advantages, kl_penalty, token_logprobs_and_entropy,
                         truncated_is_weights)
from nanorlsp.sampler import sample

STATS = ("loss", "kl", "entropy", "clip_frac", "logp_diff", "grad_norm")   # an update's figures


@dataclass
class Batch:
    """A step's rollouts on this rank: B = len(problems) x group rows, prompt-major."""
    problems: list[dict]          # this rank's prompts (row i answers problems[i // group])
    keys: list[int]               # (B,) each row's index in the step's global batch
    prompt_ids: list[list[int]]
    tokens: torch.Tensor          # (B, Tn) the sampled ids, 0 after a row's end
    mask: torch.Tensor            # (B, Tn) 1 on generated tokens (the stop token included)
    rollout_logp: torch.Tensor    # (B, Tn) the sampler's log-probs of them
    lengths: torch.Tensor         # (B,) generated tokens per row
    finish: list[str]             # (B,) "stop" | "length"
    seq: torch.Tensor             # (B, L) prompt then completion, right-padded with 0
    pos: torch.Tensor             # (B, Tn) the position whose logits predict completion token j
    texts: list[str]              # (B,) the replies, decoded without their stop token
    group: int                    # G samples per prompt
    vocab: int                    # the tokenizer's ids (the padded embedding rows are masked)


def fitting(problems: list[dict], tok, ctx: int, max_new_tokens: int, split: str,
            verbose: bool = True) -> list[dict]:
    """The problems whose prompt fits the model's ctx-token context; the others are dropped,
    said in one line (a 20M-character problem tried to allocate 400 TB of KV cache). A prompt
    that fits but leaves less than max_new_tokens is kept, said in a note: the tiny models'
    context is the length they trained on, not a hard limit (rotary positions go on)."""
    n = prompt_lengths(problems, tok, ctx)                      # prompt tokens (or > ctx)
    long = [k for k, m in enumerate(n) if m >= ctx]             # no room for a single token
    over = sum(ctx - max_new_tokens < m < ctx for m in n)
    if verbose and long:
        first = problems[long[0]]
        print(f"{split}: skipped {len(long)} of {len(problems)} problems whose prompt does not "
              f"fit the model's {ctx}-token context (the first: "
              f"{first.get('key', first['prompt'][:40])})")
    if verbose and over:
        print(f"note: {split}: {over} of {len(problems)} prompts leave less than --max_new_tokens "
              f"{max_new_tokens} of the model's {ctx}-token context: their longest replies "
              "run past the length it trained on")
    return [p for p, m in zip(problems, n) if m < ctx]


def draw_prompts(problems: list[dict], seed: int, step: int, n: int) -> list[dict]:
    """The step's global batch of prompts: a pure function of seed and step, so --resume and
    every rank see the same stream."""
    return random.Random(f"rl-{seed}-{step}").sample(problems, n)


def my_prompts(n: int, minibatches: int, rank: int, world: int) -> list[int]:
    """This rank's prompts of a global batch of n: M minibatches of consecutive prompts (PPO;
    M = 1 for REINFORCE), every world-th prompt of each, so every rank holds the same number of
    prompts of every minibatch (DDP needs every rank in every backward)."""
    c = n // minibatches
    return [k * c + j for k in range(minibatches) for j in range(rank, c, world)]


def build_sequences(prompt_ids: list[list[int]], comp: torch.Tensor, group: int, device):
    """The step's training rows, built once (every forward of the step slices them): seq (B, L)
    = each prompt, then its completion, right-padded with 0; pos (B, Tn): the position whose
    logits predict completion token j. prompt_ids: P prompts, each shared by `group` rows."""
    B, Tn = comp.shape
    Lp = torch.tensor([len(p) for p in prompt_ids], device=device).repeat_interleave(group)
    prompts = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(p, dtype=torch.long) for p in prompt_ids], batch_first=True).to(device)
    seq = torch.zeros((B, int(Lp.max()) + Tn), dtype=torch.long, device=device)
    seq[:, :prompts.size(1)] = prompts.repeat_interleave(group, dim=0)
    seq.scatter_(1, Lp[:, None] + torch.arange(Tn, device=device)[None], comp)
    return seq, Lp[:, None] - 1 + torch.arange(Tn, device=device)[None]   # (B, L), (B, Tn)


# -----------------------------------------------------------------------------
# the phases

def rollout(policy, tok, prompts: list[dict], mine: list[int], s, step: int) -> Batch:
    """Sample s.n_samples replies to each of this rank's prompts (prompts[i] for i in mine) with
    the KV-cached sampler, keyed by each row's index in the global batch (so the rollouts do not
    depend on the number of ranks), log-probs kept."""
    G, V, device = s.n_samples, tok.n_vocab, policy.d.device
    problems = [prompts[i] for i in mine]
    prompt_ids = [render(p, tok) for p in problems]
    keys = [i * G + j for i in mine for j in range(G)]
    model = policy.sampler()
    policy.gpt.eval()
    ro = sample(model, prompt_ids, s.max_new_tokens, temperature=s.temperature, n_samples=G,
                stop_tokens=tok.stop_tokens, seed=s.seed * 100003 + step, return_logprobs=True,
                vocab_limit=V, row_keys=keys)
    policy.gpt.train()
    Tn = int(ro.lengths.max())
    comp = ro.tokens[:, :Tn]
    seq, pos = build_sequences(prompt_ids, comp, G, device)
    texts = [tok.decode(t[:-1] if f == "stop" else t) for t, f in zip(ro.completions(), ro.finish)]
    return Batch(problems, keys, prompt_ids, comp, ro.mask[:, :Tn], ro.logprobs[:, :Tn],
                 ro.lengths, ro.finish, seq, pos, texts, G, V)


def grade(texts: list[str], problems: list[dict], task, tok, boxed: bool = False):
    """The verifier on each reply (problems: one per reply): (correct, has_answer, reason_ids),
    the reasoning being the text before the answer the checker read (task.answer_start). boxed:
    rlsp_paper's no-answer test (an answer is a \\boxed{...}, whatever a fallback finds)."""
    correct, has_answer, reason = [], [], []
    for text, prob in zip(texts, problems):
        correct.append(bool(task.check(text, prob)))
        start = task.answer_start(text)
        has_answer.append(first_box(text) is not None if boxed else
                          correct[-1] or start is not None)
        reason.append(tok.encode(text[:start] if start is not None else text))
    return correct, has_answer, reason


def score_texts(texts, problems, task, tok, cfg, coef, pieces=None, group_size=None, easy=None):
    """The RLSP reward of replies (grade, then rewards.score): the parts, correct, has_answer.
    The scoring that train_rl.py's step, experiments/bench.py and notebook 04 share."""
    correct, has_answer, reason = grade(texts, problems, task, tok, cfg.explore == "rlsp_paper")
    parts = reward_parts(reason, correct, has_answer, cfg, coef, pieces=pieces,
                         group_size=group_size, easy=easy, texts=texts)
    return dict(parts, correct=correct, has_answer=has_answer)


def score(batch: Batch, task, tok, explore, step: int, pieces=None) -> dict:
    """The step's rewards: the verifier, then the exploration coefficient from the global batch's
    accuracy (explore: economy.ExploreSchedule), then the reward parts. Returns rewards.score's
    (B,) parts (total, outcome, explore, repetition, economy, eff_len) and correct, has_answer,
    acc, coef, easy."""
    G = batch.group
    correct, has_answer, reason = grade(batch.texts, [batch.problems[i // G] for i in
                                                      range(len(batch.texts))], task, tok,
                                        explore.cfg.explore == "rlsp_paper")
    n_right, n_rows = dist.all_sum(torch.tensor([float(sum(correct)), float(len(correct))]))
    acc = (n_right / n_rows).item()                                    # the global batch's
    coef, row_coef, easy = explore.at(step, acc, correct)
    parts = reward_parts(reason, correct, has_answer, explore.cfg, row_coef, pieces=pieces,
                         group_size=G, easy=easy, texts=batch.texts)
    return dict(parts, correct=correct, has_answer=has_answer, acc=acc, coef=coef, easy=easy)


def optimizer_step(policy, optimizer, batch: Batch, rows: torch.Tensor, token_sums, s,
                   units: torch.Tensor | None = None):
    """One optimizer step on this rank's `rows` (all ranks together): s.grad_accum micro-batches,
    each loss a weighted token *sum* over the global count (micro-batches and ranks add up to one
    global mean; DDP averages gradients, hence x world), synced on the last, clipped, applied.
    token_sums(mb, logits, values) -> (loss sum, {kl, entropy, clip_frac, logp_diff: sums});
    units (B,): each row's share of the count (None: its tokens). Returns {STATS: this rank's
    share of the global means}, or None when a non-finite loss or gradient skipped it."""
    d = policy.d
    n_glob = dist.all_sum(batch.mask[rows].sum())
    n_den = n_glob if units is None else dist.all_sum(units[rows.to(units.device)].sum())
    chunks = rows.chunk(s.grad_accum)
    stats = dict.fromkeys(STATS, torch.zeros((), device=d.device))
    optimizer.zero_grad(set_to_none=True)
    for k, mb in enumerate(chunks):
        with dist.grad_sync(policy.net, k == len(chunks) - 1):
            logits, values = policy.forward(batch, mb)
            loss_sum, sums = token_sums(mb, logits, values)
            loss = loss_sum / n_den.clamp(min=1) * d.world
            if dist.any_rank(not bool(torch.isfinite(loss)), d.device):
                optimizer.zero_grad(set_to_none=True)
                return None
            loss.backward()
        with torch.no_grad():
            stats["loss"] = stats["loss"] + loss.detach() / d.world
            for name, x in sums.items():
                stats[name] = stats[name] + x.detach() / n_glob.clamp(min=1)   # none: 0
    gnorm = torch.nn.utils.clip_grad_norm_(policy.params, s.grad_clip or float("inf"))
    gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm   # FSDP: a DTensor
    if dist.any_rank(not bool(torch.isfinite(gnorm)), d.device):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    stats["grad_norm"] = gnorm.detach() / d.world     # the same on every rank; summed back
    return stats


def optimizer_steps(policy, optimizer, batch: Batch, row_sets: list[torch.Tensor], token_sums,
                    s, logp_diff_sum: torch.Tensor, units: torch.Tensor | None = None) -> dict:
    """optimizer_step on each of row_sets in turn (PPO's epochs x minibatches, the clipped
    objectives' --updates_per_batch passes), stopping at the first non-finite one (the updates
    before it stay applied: logged as partial). Returns global_stats with the mean over the
    applied updates, and logp_diff over the whole step's tokens (logp_diff_sum: this rank's
    sum of |log pi_old - log pi_rollout|)."""
    total = dict.fromkeys(STATS, torch.zeros((), device=batch.mask.device))
    n_updates, skipped = 0, False
    for rows in row_sets:
        stats = optimizer_step(policy, optimizer, batch, rows, token_sums, s, units)
        if stats is None:
            skipped = True
            break
        total = {name: total[name] + stats[name] for name in STATS}
        n_updates += 1
    total = {name: v / max(n_updates, 1) for name, v in total.items()}
    total["logp_diff"] = logp_diff_sum / dist.all_sum(batch.mask.sum()).clamp(min=1)
    return global_stats(total, n_updates, skipped)


def global_stats(stats: dict, updates: int, skipped: bool) -> dict:
    """The update's figures summed over ranks (every rank calls it), as train_rl.py logs them."""
    v = dict(zip(STATS, dist.all_sum(torch.stack([stats[k] for k in STATS])).tolist()))
    return dict(kl=v["kl"], entropy=v["entropy"], clip_frac=v["clip_frac"], loss=v["loss"],
                logp_diff=v["logp_diff"], grad_norm=v["grad_norm"], updates=updates,
                skipped=skipped)


def reinforce_update(policy, optimizer, batch: Batch, rewards: torch.Tensor, s) -> dict:
    """The REINFORCE step with a group baseline and a KL loss term (module docstring): one
    optimizer_step. Returns global_stats (updates 0 and skipped when it was skipped)."""
    ref_logp, _ = policy.logprobs(batch, s.temperature, s.grad_accum, reference=True)    # (B, Tn)
    adv = group_advantages(rewards, s.n_samples, s.baseline, s.std_norm)   # (B,) per reply
    # --loss_agg token_mean: every token weighs 1 (one mean over the global batch's tokens)
    mode = getattr(s, "loss_agg", "token_mean")   # seq_mean, constant: rl.agg_weights
    agg, units = (batch.mask, None) if mode == "token_mean" else agg_weights(batch.mask, mode,
                                                                            s.max_new_tokens)

    def token_sums(rows, logits, _values):
        m = batch.mask[rows]                                                       # (b, Tn)
        logp, ent = token_logprobs_and_entropy(logits / s.temperature, batch.tokens[rows], m,
                                               batch.vocab)                        # (b, Tn)
        # the training forward before the update vs the sampler's log-probs (logged)
        diff = ((logp.detach() - batch.rollout_logp[rows]).abs() * m).sum()
        w = (truncated_is_weights(logp, batch.rollout_logp[rows], m, s.tis_cap)
             if s.tis_cap else m)                                 # --tis_cap: (b, Tn) or off
        kl = kl_penalty(logp, ref_logp[rows], s.kl_estimator, m)                   # (b, Tn)
        loss = -w * adv[rows, None] * logp + s.kl_coef * kl                        # (b, Tn)
        return (agg[rows] * loss).sum(), dict(kl=kl.detach().sum(), entropy=ent,
                                              clip_frac=torch.zeros((), device=m.device),
                                              logp_diff=diff)

    stats = optimizer_step(policy, optimizer, batch, torch.arange(len(batch.tokens)),
                           token_sums, s, units)
    if stats is None:
        return dict(updates=0, skipped=True)
    return global_stats(stats, 1, False)


def step_record(batch: Batch, sc: dict, out: dict, timings: dict, task_name: str, d):
    """The step's metrics.jsonl record and its rows (every rank's, gathered in the global order:
    a collective). sc: score's dict; out: the update's global_stats; timings: t_gen, t_score,
    t_train."""
    G = batch.group
    easy = sc["easy"]
    rows = [dict(i=k, text=batch.texts[i], correct=sc["correct"][i], len=int(n),
                 finish=batch.finish[i], has_answer=sc["has_answer"][i],
                 easy=bool(easy is not None and easy[i]),
                 **{p: float(sc[p][i]) for p in
                    ("total", "outcome", "explore", "repetition", "economy")})
            for i, (k, n) in enumerate(zip(batch.keys, batch.lengths.tolist()))]
    rows = sorted(dist.gather_shards(rows, d), key=lambda r: r["i"])
    lens = torch.tensor([float(r["len"]) for r in rows])
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    totals = torch.tensor([r["total"] for r in rows]).view(-1, G)                  # (P, G)
    stats = {k: v for k, v in out.items() if k != "skipped"}
    rec = dict(reward=mean("total"), outcome=mean("outcome"), explore=mean("explore"),
               repetition=mean("repetition"), economy=mean("economy"), explore_coef=sc["coef"],
               acc=sc["acc"], len_mean=lens.mean().item(),
               **{f"len_p{q}": lens.quantile(q / 100).item() for q in (10, 50, 90)},
               truncated=sum(r["finish"] == "length" for r in rows) / len(rows),
               # diagnostics for a reward that does not move (README): groups with no
               # learning signal, replies with no answer
               flat_groups=(totals == totals[:, :1]).all(1).float().mean().item(),
               no_answer=1.0 - mean("has_answer"),
               behaviors=frequencies([r["text"] for r in rows], task_name), **stats,
               tok_per_s=float(lens.sum()) / max(timings["t_gen"], 1e-9), **timings,
               # this rank's training rows (B, L) and completion positions Tn: the shape
               # experiments/bench.py times the bare update at
               train_shape=[*batch.seq.shape, batch.tokens.shape[1]])
    if easy is not None:                     # the share of rows whose length was charged
        rec["easy_frac"] = mean("easy")
    if out["skipped"]:                       # "updates" says how many were applied
        rec["partial"] = "non-finite loss or gradient in a later minibatch"
    return rec, rows
