"""
The sampler's speed machinery: the decode batch behind `nanorlsp.sampler.sample`.

    dec = Decoder(model, cache, pad, Lp)        # cache L x (B, Hkv, S, D), prefilled to slot Lp
    logits = dec.step(nxt)                      # feed each row's last token -> (Bc, V)

None of this changes a token: the sampler gives the same Rollout with compaction, compile and
CUDA graphs on or off (tests/test_sampler.py checks each against the plain path and the naive
reference). Three speed-ups, each one named piece here:
- attention over the filled slots rounded up to a bucket (_bucket), not the whole static cache;
- compaction: finished rows leave the decode batch (_compact_sizes, _keep_rows, Decoder._compact);
- the step run through torch.compile (_compiled_step) or replayed from CUDA graphs (_GraphedStep).
Footguns: a graphed step's inputs must be the same tensors every step, changed in place only;
compile=True recompiles per batch size and cache length. How it works and what it measured:
docs/sampler.md.
"""
import torch

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


def _bucket(S: int) -> int:
    """The attention length granularity: a multiple of 64, at most 8 buckets per cache."""
    return 64 * max(1, -(-S // (8 * 64)))


# -----------------------------------------------------------------------------
# Compaction: finished rows leave the decode batch

COMPACT_ROWS = 8  # compacted batch sizes are multiples of this, and no smaller: a step of 8 rows
# or fewer is bound by reading the weights, whatever its batch, and every size is one more graph
# for a compiled or CUDA-graphed step


def _compact_sizes(B: int) -> list[int]:
    """The decode batch sizes compaction may shrink to, largest first: B, then multiples of
    COMPACT_ROWS each at most 3/4 of the one before (B = 64: 64, 48, 32, 24, 16, 8; B = 128:
    128, 96, 72, 48, 32, 24, 16, 8). A few static sizes: a compiled or graphed step replays one
    graph per (size, bucket); 3/4 keeps the batch within a third of the live rows (why 3/4 and
    not powers of two: docs/sampler.md)."""
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


# -----------------------------------------------------------------------------
# torch.compile and CUDA graphs

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
    every step of a shape, changed in place only: the token buffer (Decoder.step copies each new
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


# -----------------------------------------------------------------------------
# The decode batch


class Decoder:
    """The rows `sample` decodes, one token per step, after the prefill.

    Decode row i generates output row rows[i]; live[i] says it is still generating (sample calls
    finish() with each step's stop tokens). Without compaction the decode batch is the whole
    batch in order (rows = 0..B-1); with it (compact=True), once the live rows fit a smaller size
    of _compact_sizes(B), their cache, positions, mask and last token are gathered into a batch
    of that size (finished rows fill the rest), so finished rows stop costing compute and each
    row keeps its own results. Each step writes the last token's keys and values into the next
    slot in place and attends over the filled slots rounded up to a bucket, not the whole cache:
    every step of a bucket has the same shapes, so compile=True traces it once per shape and
    cuda_graph (None: on for a model on CUDA) replays it from a graph. cuda_graph=True on CPU runs
    the same static-buffer bookkeeping without graphs (what the tests check of the GPU path).
    """

    def __init__(self, model, cache, pad: torch.Tensor, Lp: int, compile: bool = False,
                 cuda_graph: bool | None = None, compact: bool = True):
        # cache L x (B, Hkv, S, D) holds each row's prompt in slots pad[b] .. Lp - 1 (left-padded)
        device = pad.device
        B, S = len(pad), cache.max_len
        self.model, self.cache, self.Lp, self.S, self.bucket = model, cache, Lp, S, _bucket(S)
        self.fn = _compiled_step() if compile else _decode_step
        self.graphed = device.type == "cuda" if cuda_graph is None else cuda_graph
        if self.graphed:
            self.fn = _GraphedStep(self.fn, device)
        self.sizes = _compact_sizes(B) if compact else [B]
        self.rows = torch.arange(B, device=device)                             # (Bc,)
        self.live = torch.ones(B, dtype=torch.bool, device=device)             # (Bc,)
        self.n_live = B
        # the step's inputs: buffers updated in place, so a compiled or graphed step sees the same
        # tensors every step (an int would be a new constant); valid (Bc, S) grows slot by slot
        slots = torch.arange(S, device=device)
        self.valid = (slots[None, :] >= pad[:, None]) & (slots[None, :] < Lp)  # (Bc, S)
        self.pos = (Lp - pad)[:, None]                                         # (Bc, 1)
        self.tok = torch.zeros((B, 1), dtype=torch.long, device=device)        # (Bc, 1)
        self.slot_idx = torch.full((1,), Lp, dtype=torch.long, device=device)  # (1,)
        self.filled = Lp                                                       # slots written

    def step(self, nxt: torch.Tensor) -> torch.Tensor:
        """Feed nxt (Bc,), each decode row's last token; return the next logits (Bc', V), Bc' the
        decode batch after compacting (rows and live are then the compacted ones)."""
        size = min(s for s in self.sizes if s >= self.n_live)
        if size < len(self.rows):
            nxt = self._compact(size, nxt)
        self.filled += 1
        n_attn = min(self.S, self.bucket * -(-self.filled // self.bucket))
        self.tok.copy_(nxt[:, None])
        logits = self.fn(self.model, self.cache, self.tok, self.pos, self.slot_idx,
                         self.valid[:, :n_attn])                               # (Bc, V)
        self.slot_idx += 1
        self.pos += 1
        return logits

    def finish(self, is_stop: torch.Tensor) -> int:
        """Mark the decode rows that just emitted a stop token (is_stop (Bc,) bool) finished;
        returns the number still live."""
        self.live = self.live & ~is_stop
        self.n_live = int(self.live.sum())
        return self.n_live

    def _compact(self, size: int, nxt: torch.Tensor) -> torch.Tensor:
        """Gather the kept rows (every per-row decode tensor, in the same order) into a batch of
        `size`; returns nxt's kept rows."""
        keep = _keep_rows(self.live, size)                                     # (size,)
        self.cache = self.cache.select_rows(keep)
        self.valid, self.pos, self.tok = self.valid[keep], self.pos[keep], self.tok[keep]
        self.rows, self.live = self.rows[keep], self.live[keep]
        if self.graphed:
            self.fn.reset()
        return nxt[keep]
