"""
The KV-cached sampler: batched generation for evaluation and RL rollouts.

    from nanorlsp.sampler import generate, sample
    completions = generate(model, prompts, max_new_tokens=256, temperature=0)  # list[list[int]]
    out = sample(model, prompts, 256, n_samples=8, return_logprobs=True)        # a Rollout
    out = sample(model, prompts, 256, n_samples=8, compile=True)  # decode step via torch.compile
    sample(model, [ids], 256, stop_tokens=stops, on_token=show)  # stream: show(t, tokens, done)

How it works (the model's forward takes the cache hooks, so nothing here forks the model):
1. Ragged prompts are LEFT-padded to the longest, Lp tokens. Each row's rotary positions start
   at 0 on its first real token (positions = slot - pad), so a padded prompt sees exactly the
   positions it would see alone; pad slots are never attended to.
2. Prefill: one forward over the (P, Lp) prompts writes keys/values into a static cache.
3. The cache rows are copied to each prompt's n_samples rows (the GRPO / RLSP group): a prompt is
   encoded once however many samples it gets.
4. Decode: one token per step for all B = P * n_samples rows. Step t writes slot Lp + t in place;
   the attention mask (B, 1, 1, S') marks the valid slots among the first S' (the filled part,
   rounded up to a bucket). Every step of a bucket has the same shapes, with
   no tensor growing and no per-row Python loop: `_decode_step` is one function of fixed-shape
   tensors, run eager or, with compile=True, through torch.compile (traced once per shape).
5. A row that emits a stop token is finished: later tokens are padding and are not counted.
6. Compaction (compact=True): once the live rows fit a smaller of a few static batch sizes,
   they are gathered into it (cache, positions, mask, keyed uniforms), so finished rows stop
   costing compute; results are scattered back to their own rows (the same Rollout).
7. On CUDA the decode step is replayed from CUDA graphs (_GraphedStep: one per batch size and
   bucket), every input a static buffer updated in place. Not yet run on a GPU.

Attention length: step t attends over the filled slots rounded up to a bucket (a multiple of 64,
at most 8 buckets per cache), never the whole static cache: a tiny model's decode is bound by
reading its cache, and a fixed bucket keeps the shapes static (one compiled graph per bucket).

Speed: `python bench.py --sections decode,ragged` (numbers in the README's performance section).

Memory: the cache holds 2 * n_layer * B * n_kv_head * S * head_dim elements (S = Lp +
max_new_tokens), allocated once (a compaction allocates the smaller one, then frees this), plus the prefill's 2 * n_layer * P * n_kv_head * S * head_dim
until it is copied into the decode cache.
For the tiny default (2 layers, 4 kv heads, head_dim 32) at B = 64, S = 384, float32: 50 MB.

Log-probabilities returned on request are those of the sampled token under the
temperature-scaled distribution softmax(logits / T), before top-k / top-p truncation (the policy
RL optimises; at T = 0 they are the untempered log-probs). The logits are float32 products and
sums even in a bf16 rollout copy (the model runs its LM head in float32: GPT._logits).

vocab_limit: the model's embedding is padded past the tokenizer's vocabulary (to a multiple of 64
for fast matmuls); those ids decode to nothing, so logits at ids >= vocab_limit are set to -inf
before sampling and before the log-probs (which are then those of the distribution actually
sampled; the RL loss must mask the same way).
"""
from dataclasses import dataclass

import numpy as np
import torch

from nanorlsp.model import KVCache


@dataclass
class Rollout:
    tokens: torch.Tensor        # (B, max_new_tokens) sampled ids; pad_id after a row finished
    mask: torch.Tensor          # (B, max_new_tokens) 1.0 on generated tokens (stop token included)
    lengths: torch.Tensor       # (B,) number of generated tokens per row
    finish: list[str]           # "stop" (emitted a stop token) or "length" (hit max_new_tokens)
    logprobs: torch.Tensor | None  # (B, max_new_tokens) log-prob of each sampled token, or None

    def completions(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths.tolist())]


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


# -----------------------------------------------------------------------------
# Randomness keyed by (seed, row key, step): shard-invariant sampling

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


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


# -----------------------------------------------------------------------------
# The decode step: one function of fixed-shape tensors, run eager or compiled

def _decode_step(model, cache, tok, pos, slot_idx, valid):
    """Feed each row's previous token and return the next-token logits (B, V).

    tok (B, 1) ids, pos (B, 1) their rotary positions, slot_idx (1,) long: the cache slot they
    are written to, valid (B, S') bool: the slots a query may attend to (a view of the first S'
    slots, S' >= slot_idx + 1), updated here in place to include slot_idx. The attention reads
    only those S' slots of the cache. Same shapes every step of a bucket, slot a tensor not an
    int: torch.compile traces this once per shape (architecture, B, S') and replays it; nothing
    allocated here grows with t.
    """
    valid.index_fill_(1, slot_idx, True)
    logits = model(tok, positions=pos, kv_cache=cache, cache_index=slot_idx,
                   attn_mask=valid[:, None, None, :])                           # (B, 1, V)
    return logits[:, -1, :]


# -----------------------------------------------------------------------------
# Compaction: finished rows leave the decode batch

COMPACT_ROWS = 8  # compacted batch sizes are multiples of this, and no smaller: a step of 8 rows
# or fewer is bound by reading the weights, whatever its batch, and every size is one more graph
# for a compiled or CUDA-graphed step


def _compact_sizes(B: int) -> list[int]:
    """The decode batch sizes compaction may shrink to, largest first: B, then multiples of
    COMPACT_ROWS each at most 3/4 of the one before (B = 64: 64, 48, 32, 24, 16, 8; B = 128:
    128, 96, 72, 48, 32, 24, 16, 8). A few static sizes: a compiled or graphed step replays one
    graph per (size, bucket). Why 3/4: the batch then carries at most a third more rows than are
    live (powers of two: up to twice; on the bench's ragged batch, 64 SmolLM2 replies, the rows
    decoded per reply token were 1.16 with 3/4, 1.36 with powers of two, 1.05 with every multiple
    of 8, 1.75 without compaction: counted from its replies' lengths), with about
    log(B/8)/log(4/3) sizes (every multiple of 8: B/8)."""
    m, sizes = COMPACT_ROWS, [B]
    while (s := 3 * sizes[-1] // 4 // m * m) >= m:
        sizes.append(s)
    return sizes


def _keep_rows(live: torch.Tensor, size: int) -> torch.Tensor:
    """Indices (size,) into the decode batch for the compacted one: every live row, in order, then
    finished rows as filler up to `size`. A filler's results are never written: it is finished,
    so its token is pad_id and its log-prob 0, as the row's already are."""
    idx = torch.cat((live.nonzero()[:, 0], (~live).nonzero()[:, 0]))
    return idx[:size]


def _bucket(S: int) -> int:
    """The attention length granularity: a multiple of 64, at most 8 buckets per cache."""
    return 64 * max(1, -(-S // (8 * 64)))


_compiled_decode_step = None


def _compiled_step():
    """torch.compile(_decode_step), built on first use.

    One wrapper serves every model: dynamo keeps its compiled graphs on _decode_step's code,
    guarded on the shapes and dtypes of the inputs (parameters included), so a later `sample`
    call, or another model of the same architecture, reuses the graph without recompiling.
    dynamic=False: the graph is specialised to the shapes it first sees; a new batch size B,
    cache length S = Lp + max_new_tokens or architecture compiles again (seconds on CPU), and
    past torch._dynamo.config.recompile_limit (8) of them dynamo warns and runs the step eager.
    On CPU inductor needs a C++ compiler; without one the first compiled step raises.
    """
    global _compiled_decode_step
    if _compiled_decode_step is None:
        # one graph per (B, S') bucket: up to 8 per cache length, a few batch sizes per process
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _compiled_decode_step = torch.compile(_decode_step, dynamic=False)
    return _compiled_decode_step


class _GraphedStep:
    """The decode step replayed from CUDA graphs (torch.cuda.CUDAGraph): one graph per decode
    shape (rows B, attended slots S'), captured at its first step and replayed at every later
    step of that shape. A replay launches the step's few hundred kernels at once: a decode step
    of a small model on a GPU is bound by launching them one by one from Python, not by the
    GPU's work.

    A graph replays fixed kernels on fixed addresses, so every input must be the same tensor at
    every step of a shape, changed in place only: the token buffer (the sampler copies each new
    token into it), positions and slot index (advanced in place), the mask (a view of one
    (B, S) buffer, filled in place by _decode_step), the cache buffers (written in place) and
    the model's weights (train_rl refreshes its rollout copy in place, between calls). A call
    whose inputs moved raises (a graph would read stale memory); compaction moves them all to
    new, smaller buffers, and `reset` drops the old graphs. The step is idempotent (it writes
    this step's keys, values and mask slot, the same values each time it runs), so the warm-up
    run, the capture and the first replay may all run it.

    Graphs of one sample() call share one memory pool (they never run concurrently, and each
    graph's output stays referenced here, so no later graph is given its memory); they are freed
    with the call. On CPU there are no graphs: the step runs eagerly with the same bookkeeping
    and checks (what tests/test_sampler.py tests for the GPU path).
    """

    def __init__(self, fn, device: torch.device):
        self.fn, self.cuda = fn, device.type == "cuda"
        self.pool = torch.cuda.graph_pool_handle() if self.cuda else None
        self.graphs = {}      # (B, S') -> (graph or None, its output logits, input addresses)
        self.shapes = []      # every (B, S') captured, in order: one graph each

    def reset(self):
        """Drop the graphs: the sampler compacted its batch into new buffers."""
        self.graphs.clear()

    def __call__(self, model, cache, tok, pos, slot_idx, valid):
        args = (model, cache, tok, pos, slot_idx, valid)
        ptrs = tuple(x.data_ptr() for x in (tok, pos, slot_idx, valid, *cache.k, *cache.v))
        key = tuple(valid.shape)
        if key in self.graphs:
            graph, out, want = self.graphs[key]
            if ptrs != want:
                raise RuntimeError("a CUDA-graphed decode step's inputs moved (not updated in "
                                   "place): the graph would read stale memory")
            if graph is None:
                return self.fn(*args)
            graph.replay()
            return out
        if self.cuda:
            # warm-up on a side stream (lazy cuBLAS / kernel init must not happen in capture)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn(*args)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = self.fn(*args)                       # recorded, not run
            graph.replay()
        else:
            graph, out = None, self.fn(*args)
        self.graphs[key] = (graph, out, ptrs)
        self.shapes.append(key)
        return out


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
    row samples the same tokens on any rank. seed=None draws a seed from torch's global RNG.

    compile=True runs the decode step through torch.compile (see _compiled_step): the first call
    for a model and shape pays the compile, later calls with the same B and S reuse it.

    compact=True (the default): finished rows leave the decode batch. When the live rows fit a
    smaller size of _compact_sizes(B) (B, then multiples of 8 each at most 3/4 of the one
    before), their cache, positions, mask, keyed uniforms and last token are gathered into a
    batch of that size (finished rows fill the rest); results are scattered back to their own
    rows, so the Rollout is compact=False's: same order, lengths, finish reasons, each row's own
    keyed samples, the same tokens, and log-probs equal up to float rounding (a matmul over
    fewer rows may round differently: bit-identical on the dev CPU at >= 8 rows with 1 thread,
    within 3e-6 with 2 threads). A compaction copies the live rows' cache: a few per call.

    cuda_graph: replay the decode step from CUDA graphs (_GraphedStep); None (the default) means
    on for a model on CUDA, off elsewhere. With compile=True the compiled step is captured.
    True on CPU runs the same static-buffer bookkeeping without graphs (a check, no speed-up).

    on_token(t, tokens, done): called after decode step t (0-based) with tokens (B,) long, the
    token each row generated at step t (pad_id for a row that finished before it), and done (B,)
    bool, the rows finished so far (this step's stop tokens included); both fresh copies on the
    model's device, rows in the Rollout's order. A chat script streams a reply from it:
        sample(model, [ids], 256, temperature=0.7, stop_tokens=tok.stop_tokens,
               on_token=lambda t, x, d: print(tok.decode([int(x[0])]), end="", flush=True))
    (decode a growing list of ids instead when one character spans several tokens). It runs
    between steps: slow callbacks slow the decode; raising in it aborts the call.
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
    dtype = next(model.parameters()).dtype
    P, n = len(prompts), n_samples
    B = P * n
    Lp = max(len(p) for p in prompts)
    S = Lp + max_new_tokens
    if row_keys is None:
        row_keys = list(range(B))
    if len(row_keys) != B:
        raise ValueError(f"row_keys has {len(row_keys)} keys for {B} rows")
    if temperature > 0:
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        uniforms = row_uniforms(seed, row_keys, max_new_tokens).to(device)        # (B, T)
    stop = torch.tensor(sorted(set(stop_tokens or [])), dtype=torch.long, device=device)

    # -- prefill: left-padded prompts (P, Lp) ---------------------------------------------
    pad = torch.tensor([Lp - len(p) for p in prompts], device=device)            # (P,)
    idx = torch.full((P, Lp), pad_id, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        idx[i, Lp - len(p):] = torch.tensor(p, dtype=torch.long)
    slots = torch.arange(S, device=device)
    valid = slots[None, :] >= pad[:, None]                                        # (P, S) real slots
    positions = (slots[None, :Lp] - pad[:, None]).clamp(min=0)                    # (P, Lp)
    causal = slots[:Lp, None] >= slots[None, :]                                   # (Lp, S)
    # a query attends to real keys at or before it; a pad query attends to itself only, so its
    # softmax is finite (an all-masked row would give NaN, and 0 * NaN poisons the real rows)
    attn = (causal[None] & valid[:, None, :]) | (slots[:Lp, None] == slots[None, :])[None]
    small = KVCache(model.config, P, S, device, dtype)
    # the prompts attend over their own Lp slots only (attn_mask's length: see the model), and
    # the LM head runs at the last position only: the only logits sampling needs (SmolLM2 at 64
    # prompts x 16 tokens spent more time in the other positions' head than in the rest)
    last = torch.full((P, 1), Lp - 1, device=device)
    logits = model(idx, positions=positions, kv_cache=small, cache_index=slots[:Lp],
                   attn_mask=attn[:, None, :, :Lp], logits_at=last)[:, -1, :]   # (P, V)

    # -- copy each prompt's cache to its n_samples rows ---------------------------------
    cache = small.repeat_rows(n)                                                  # L x (B, Hkv, S, D)
    del small
    if n > 1:
        logits = logits.repeat_interleave(n, dim=0)                               # (B, V)
        pad, valid = pad.repeat_interleave(n), valid.repeat_interleave(n, dim=0)
    valid = valid.clone()
    valid[:, Lp:] = False                                                          # (B, S) filled as we go

    # -- decode ---------------------------------------------------------------------------
    step = _compiled_step() if compile else _decode_step
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph:
        step = _GraphedStep(step, device)
    # the outputs, one row per (prompt, sample), in the Rollout's order
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros((B, max_new_tokens), device=device) if return_logprobs else None
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    hit_stop = torch.zeros(B, dtype=torch.bool, device=device)    # finished rows
    # the decode batch: Bc rows, decode row i generating output row rows[i]; live marks the rows
    # still generating. Compaction (see sample's docstring) shrinks it; without stop tokens no
    # row finishes and it stays the whole batch.
    sizes = _compact_sizes(B) if compact and stop.numel() else [B]
    rows = torch.arange(B, device=device)                                         # (Bc,)
    live = torch.ones(B, dtype=torch.bool, device=device)                         # (Bc,)
    n_live = B
    u = uniforms if temperature > 0 else None                                     # (Bc, T)
    # the previous token, its cache slot and rotary position: buffers updated in place, so a
    # compiled or graphed step sees the same inputs every step (an int would be a new constant)
    tok = torch.zeros((B, 1), dtype=torch.long, device=device)                    # (Bc, 1)
    slot_idx = torch.full((1,), Lp, dtype=torch.long, device=device)             # (1,)
    pos = (Lp - pad)[:, None]                                                     # (Bc, 1)
    # step t attends over slots 0 .. Lp + t - 1: the mask (and so the cache read) covers the
    # first Lp + t slots rounded up to a bucket, not all S (measured in bench.py)
    bucket = _bucket(S)
    for t in range(max_new_tokens):
        if t > 0:
            size = min(s for s in sizes if s >= n_live)
            if size < len(rows):
                # compact: every per-row decode tensor keeps the kept rows, in the same order
                keep = _keep_rows(live, size)                                     # (size,)
                cache = cache.select_rows(keep)
                valid, pos, tok, nxt = valid[keep], pos[keep], tok[keep], nxt[keep]
                rows, live = rows[keep], live[keep]
                u = u[keep] if u is not None else None
                if cuda_graph:
                    step.reset()
            n_attn = min(S, bucket * -(-(Lp + t) // bucket))
            tok.copy_(nxt[:, None])
            logits = step(model, cache, tok, pos, slot_idx, valid[:, :n_attn])  # (Bc, V)
            slot_idx += 1
            pos += 1
        if vocab_limit is not None and vocab_limit < logits.size(-1):
            logits = logits.clone()
            logits[:, vocab_limit:] = float("-inf")      # padded embedding rows: never sampled
        if temperature == 0:
            nxt = logits.argmax(-1)
            scaled = logits
        else:
            scaled = logits / temperature
            probs = torch.softmax(filter_logits(scaled, top_k, top_p), dim=-1)
            nxt = _draw(probs, u[:, t])                  # each row's own keyed uniform
        lp = None
        if logps is not None:
            lp = torch.log_softmax(scaled.float(), -1).gather(-1, nxt[:, None]).squeeze(-1)
        if stop.numel() == 0:        # no stop tokens: no row ever finishes, skip the bookkeeping
            tokens[:, t] = nxt
            if lp is not None:
                logps[:, t] = lp
        else:
            # scatter to the output rows; fillers are finished rows: pad_id and 0 again
            nxt = torch.where(live, nxt, pad_id)
            tokens[rows, t] = nxt
            if lp is not None:
                logps[rows, t] = torch.where(live, lp, 0.0)
            lengths.index_add_(0, rows, live.long())
            is_stop = torch.isin(nxt, stop) & live
            hit_stop[rows] = hit_stop[rows] | is_stop
            live = live & ~is_stop
            n_live = int(live.sum())
        if on_token is not None:
            on_token(t, tokens[:, t].clone(), hit_stop.clone())
        if n_live == 0:
            break
    if stop.numel() == 0:
        lengths.fill_(max_new_tokens)                    # every row ran to max_new_tokens
    ar = torch.arange(max_new_tokens, device=device)
    mask = (ar[None, :] < lengths[:, None]).float()
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
