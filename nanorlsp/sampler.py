"""
The sampler: batched generation for evaluation and RL rollouts, and its naive reference.

    from nanorlsp.sampler import generate, sample
    completions = generate(model, prompts, max_new_tokens=256, temperature=0)  # list[list[int]]
    out = sample(model, prompts, 256, n_samples=8, return_logprobs=True)        # a Rollout

generate_naive recomputes the whole sequence every step; the KV-cached `sample` must give its
tokens exactly, greedy and sampled. Token t of a row is y_t ~ softmax(filter(z_t / T)) (top-k,
top-p), drawn by inverse CDF with a uniform keyed by (seed, row key, t); its log-prob is
log softmax(z_t / T)[y_t], before filtering (the policy RL optimises; T = 0: greedy, untempered).
Prompts are left-padded, prefilled once, and their cache copied to their n_samples rows; the speed
machinery (compaction, torch.compile, CUDA graphs) is nanorlsp/sampler_fast.py. Details and
timings: docs/sampler.md.

Footguns: ids >= vocab_limit (the embedding's padding past the tokenizer) get logit -inf before
the draw and the log-probs, and the RL loss must mask them alike; pad_id is fed to the model, so
it must be a real token id; seed=None draws a seed from torch's global RNG.
"""
from dataclasses import dataclass

import numpy as np
import torch

from nanorlsp.model import KVCache
from nanorlsp.sampler_fast import Decoder

# -----------------------------------------------------------------------------
# The ground truth: recompute the whole sequence every step


@torch.no_grad()
def generate_naive(model, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float = 1.0, n_samples: int = 1,
                   stop_tokens=None, seed: int | None = None,
                   vocab_limit: int | None = None) -> list[list[int]]:
    """generate's output the slow, obvious way: one row at a time, no cache, no padding, the
    whole sequence run through the model for every token. Same keyed uniforms (row b = prompt
    b // n_samples, key b) and filtering as `sample`, so at any temperature it gives the cached
    sampler's tokens (up to float rounding of the logits deciding a near tie)."""
    B, device = len(prompts) * n_samples, next(model.parameters()).device
    if temperature > 0 and seed is None:
        seed = int(torch.randint(0, 2 ** 62, (1,)).item())
    uniforms = row_uniforms(seed, list(range(B)), max_new_tokens) if temperature > 0 else None
    out = []
    for b in range(B):
        seq, new = list(prompts[b // n_samples]), []
        for t in range(max_new_tokens):
            logits = model(torch.tensor([seq], device=device))[:, -1, :]          # (1, V)
            u = uniforms[b, t:t + 1].to(device) if uniforms is not None else None  # (1,)
            nxt = int(_next_token(logits, temperature, top_k, top_p, vocab_limit, u)[0])
            seq.append(nxt)
            new.append(nxt)
            if nxt in (stop_tokens or ()):
                break
        out.append(new)
    return out


@dataclass
class Rollout:
    tokens: torch.Tensor        # (B, max_new_tokens) sampled ids; pad_id after a row finished
    mask: torch.Tensor          # (B, max_new_tokens) 1.0 on generated tokens (stop token included)
    lengths: torch.Tensor       # (B,) number of generated tokens per row
    finish: list[str]           # "stop" (emitted a stop token) or "length" (hit max_new_tokens)
    logprobs: torch.Tensor | None  # (B, max_new_tokens) log-prob of each sampled token, or None

    def completions(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths.tolist())]


# -----------------------------------------------------------------------------
# Drawing one token: filtering and randomness keyed by (seed, row key, step)

def filter_logits(logits, top_k, top_p):
    """Mask logits (B, V) outside the top-k / nucleus top-p set to -inf."""
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]          # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (keeps >= 1 token)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014): a bijective mix of uint64 counters into
    well-distributed uint64s. numpy uint64 arithmetic wraps mod 2^64, as the algorithm wants."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_uniforms(seed: int, row_keys: list[int], n_steps: int) -> torch.Tensor:
    """U (B, n_steps) float64 in [0, 1): the uniform that draws row b's token at step t.

    A counter-based generator (like Philox): U[b, t] is a hash of (seed, row_keys[b], t) alone,
    not of the batch the row happens to be in. So a rollout is the same whether its prompt is
    sampled alone, in a batch of 128, or on rank 3 of a torchrun job: the DDP test compares a
    2-process run with a 1-process run token for token. (torch.multinomial with a generator
    draws for the whole batch at once, so sharding the batch would change every sample.)
    """
    with np.errstate(over="ignore"):
        s = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        k = _splitmix64(np.array(row_keys, dtype=np.uint64) ^ s)                # (B,)
        x = _splitmix64(k[:, None] + np.arange(n_steps, dtype=np.uint64)[None, :])
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) / float(2 ** 53))


def _draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the first id whose cumulative probability exceeds u * total.
    probs (B, V), u (B,) -> (B,). u * total < total, so the id always has probability > 0
    (never a masked id), whatever the rounding of the float64 cumulative sum."""
    cdf = probs.double().cumsum(-1)                                                 # (B, V)
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)


def _next_token(logits, temperature, top_k, top_p, vocab_limit, u, logprobs=False):
    """Each row's next token (B,) from its logits (B, V): argmax at temperature 0, else an
    inverse-CDF draw with uniforms u (B,) from softmax(filter(logits / T)); and, when logprobs,
    its log-prob (B,) under softmax(logits / T) (None otherwise)."""
    if vocab_limit is not None and vocab_limit < logits.size(-1):
        logits = logits.clone()
        logits[:, vocab_limit:] = float("-inf")      # padded embedding rows: never sampled
    if temperature == 0:
        nxt, scaled = logits.argmax(-1), logits
    else:
        scaled = logits / temperature
        nxt = _draw(torch.softmax(filter_logits(scaled, top_k, top_p), dim=-1), u)
    lp = None
    if logprobs:
        lp = torch.log_softmax(scaled.float(), -1).gather(-1, nxt[:, None]).squeeze(-1)
    return nxt, lp


# -----------------------------------------------------------------------------
# The KV-cached sampler

def _prefill(model, prompts: list[list[int]], pad_id: int, S: int):
    """One forward over the left-padded prompts (P, Lp): returns the next-token logits (P, V),
    a KVCache of P rows and S slots holding the prompts in slots 0 .. Lp - 1, and each prompt's
    left padding pad (P,). Pad slots are never attended to."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    P, Lp = len(prompts), max(len(p) for p in prompts)
    pad = torch.tensor([Lp - len(p) for p in prompts], device=device)            # (P,)
    idx = torch.full((P, Lp), pad_id, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        idx[i, Lp - len(p):] = torch.tensor(p, dtype=torch.long)
    slots = torch.arange(S, device=device)
    valid = slots[None, :] >= pad[:, None]                                  # (P, S) real slots
    positions = (slots[None, :Lp] - pad[:, None]).clamp(min=0)                    # (P, Lp)
    causal = slots[:Lp, None] >= slots[None, :]                                   # (Lp, S)
    # a query attends to real keys at or before it; a pad query attends to itself only, so its
    # softmax is finite (an all-masked row would give NaN, and 0 * NaN poisons the real rows)
    attn = (causal[None] & valid[:, None, :]) | (slots[:Lp, None] == slots[None, :])[None]
    cache = KVCache(model.config, P, S, device, dtype)
    # the prompts attend over their own Lp slots only (attn_mask's length: see the model), and
    # the LM head runs at the last position only: the only logits sampling needs (SmolLM2 at 64
    # prompts x 16 tokens spent more time in the other positions' head than in the rest)
    last = torch.full((P, 1), Lp - 1, device=device)
    logits = model(idx, positions=positions, kv_cache=cache, cache_index=slots[:Lp],
                   attn_mask=attn[:, None, :, :Lp], logits_at=last)[:, -1, :]   # (P, V)
    return logits, cache, pad


@torch.no_grad()
def sample(model, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float = 1.0, n_samples: int = 1,
           stop_tokens=None, seed: int | None = None, return_logprobs: bool = False,
           pad_id: int = 0, vocab_limit: int | None = None, compile: bool = False,
           row_keys: list[int] | None = None, compact: bool = True,
           cuda_graph: bool | None = None, on_token=None) -> Rollout:
    """Generate for every prompt n_samples times; rows are prompt-major (prompt i's samples are
    rows i*n_samples .. i*n_samples + n_samples - 1).

    Sampling is keyed: row b's randomness is a function of (seed, row_keys[b]) only (default
    keys 0..B-1; see row_uniforms). train_rl passes each row's index in the *global* batch, so a
    row samples the same tokens on any rank.

    Speed switches, none of which changes a token (see sampler_fast.Decoder): compact (finished
    rows leave the decode batch; log-probs equal up to float rounding), compile (the decode step
    through torch.compile), cuda_graph (replayed from CUDA graphs; None: on for a CUDA model).

    on_token(t, tokens, done): called between steps, after decode step t (0-based), with tokens
    (B,) the token each row generated at step t (pad_id once finished) and done (B,) bool the rows
    finished so far (this step's included): fresh copies, in the Rollout's row order. Raising in
    it aborts the call. A chat script streams a reply with it:
        sample(model, [ids], 256, temperature=0.7, stop_tokens=tok.stop_tokens,
               on_token=lambda t, x, d: print(tok.decode([int(x[0])]), end="", flush=True))
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token lists")
    if max_new_tokens < 1 or n_samples < 1:
        raise ValueError("max_new_tokens and n_samples must be >= 1")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not 0 <= pad_id < model.config.vocab_size:
        # pad_id is fed to the model (left padding, finished rows): it must be a real token id
        raise ValueError(f"pad_id {pad_id} is not a token id of the model")
    device = next(model.parameters()).device
    P, n = len(prompts), n_samples
    B, Lp = P * n, max(len(p) for p in prompts)
    row_keys = list(range(B)) if row_keys is None else row_keys
    if len(row_keys) != B:
        raise ValueError(f"row_keys has {len(row_keys)} keys for {B} rows")
    if temperature > 0:
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        uniforms = row_uniforms(seed, row_keys, max_new_tokens).to(device)        # (B, T)
    stop = torch.tensor(sorted(set(stop_tokens or [])), dtype=torch.long, device=device)

    # -- prefill the left-padded prompts (P, Lp) once, then copy each prompt's cache (and its
    # next-token logits) to its n rows: the decode batch, L x (B, Hkv, S, D), S = Lp + T
    logits, small, pad = _prefill(model, prompts, pad_id, Lp + max_new_tokens)   # (P, V)
    logits, pad = logits.repeat_interleave(n, dim=0), pad.repeat_interleave(n)   # (B, V), (B,)
    dec = Decoder(model, small.repeat_rows(n), pad, Lp, compile=compile, cuda_graph=cuda_graph,
                  compact=compact and stop.numel() > 0)  # no stop tokens: no row ever finishes
    del small                                             # copied: free the prefill's cache

    # -- decode: step -> draw -> stop, one token per step for every live row ---------------
    # the outputs, one row per (prompt, sample), in the Rollout's order
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros((B, max_new_tokens), device=device) if return_logprobs else None
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    hit_stop = torch.zeros(B, dtype=torch.bool, device=device)    # finished rows
    for t in range(max_new_tokens):
        if t > 0:
            logits = dec.step(nxt)                                # (Bc, V), Bc <= B decode rows
        rows, live = dec.rows, dec.live                           # (Bc,): output row, live
        u = uniforms[rows, t] if temperature > 0 else None        # each row's own keyed uniform
        nxt, lp = _next_token(logits, temperature, top_k, top_p, vocab_limit, u, return_logprobs)
        if stop.numel():
            # a finished row (kept as a compaction filler) writes pad_id and log-prob 0 again
            nxt = torch.where(live, nxt, pad_id)
            lp = torch.where(live, lp, 0.0) if lp is not None else None
            lengths.index_add_(0, rows, live.long())
            is_stop = torch.isin(nxt, stop) & live
            hit_stop[rows] |= is_stop
            dec.finish(is_stop)
        tokens[rows, t] = nxt
        if lp is not None:
            logps[rows, t] = lp
        if on_token is not None:
            on_token(t, tokens[:, t].clone(), hit_stop.clone())
        if dec.n_live == 0:
            break
    if stop.numel() == 0:
        lengths.fill_(max_new_tokens)                    # every row ran to max_new_tokens
    mask = (torch.arange(max_new_tokens, device=device)[None, :] < lengths[:, None]).float()
    finish = ["stop" if s else "length" for s in hit_stop.tolist()]
    return Rollout(tokens, mask, lengths, finish, logps)


def generate(model, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float = 1.0, n_samples: int = 1,
             stop_tokens=None, seed: int | None = None,
             vocab_limit: int | None = None, compile: bool = False) -> list[list[int]]:
    """Generated ids only, prompt-major, each cut after its first stop token (kept).

    temperature=0 is greedy. See `sample` for the richer call the RL loop uses.
    """
    return sample(model, prompts, max_new_tokens, temperature, top_k, top_p, n_samples,
                  stop_tokens, seed, vocab_limit=vocab_limit, compile=compile).completions()
