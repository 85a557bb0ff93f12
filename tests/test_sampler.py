"""
Tests for nanorlsp/sampler.py and its speed machinery (nanorlsp/sampler_fast.py): the KV-cached
sampler against the naive reference (sampler.generate_naive: full recompute every step), greedy
and sampled, on ragged prompts; the output layout, seeding, returned log-probs against a full
forward, top-k / top-p, finished rows and bad input; compaction, the CUDA-graph bookkeeping on
CPU, and the torch.compile'd decode step against eager (marked slow: compiling takes seconds).
Hermetic, seeded, tiny random models; a few seconds on CPU.

    python -m pytest tests/test_sampler.py -q
"""
import pytest
import torch

import helpers
from helpers import one_thread  # noqa: F401 (autouse fixture)
from nanorlsp.model import GPT, ModelConfig
from nanorlsp.sampler import generate, generate_naive, sample

V = 64
PROMPTS = [[5], [7, 3, 9, 1], [2, 8, 4, 6, 10, 12, 14, 16, 18]]   # ragged: lengths 1, 4, 9




def make_model(seed=0, scale=0.3, **overrides):
    """helpers.make_model with the sampler tests' defaults: vocab V, weights re-drawn ~ N(0, 0.3)
    so greedy choices are well separated (not decided by float noise); scale=None keeps the
    default init, whose next-token distribution is close to uniform."""
    return helpers.make_model(seed, scale, **{"vocab_size": V, **overrides})


@torch.no_grad()
def full_logits(model, prompt, completion):
    """Logits (len(completion), V) that predicted each completion token, from one plain forward."""
    seq = torch.tensor([list(prompt) + list(completion)])
    return model(seq)[0, len(prompt) - 1: len(prompt) + len(completion) - 1]


# -----------------------------------------------------------------------------
# Greedy parity with the naive reference

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_samples", [1, 3])
def test_greedy_matches_naive_reference(seed, n_samples):
    overrides = dict(qkv_bias=True, tie_embeddings=True) if seed == 2 else {}
    model = make_model(seed=seed, **overrides)
    max_new = 12
    ref = generate_naive(model, PROMPTS, max_new, temperature=0)
    assert all(len(r) == max_new for r in ref)
    # stop tokens the reference actually emits mid-way, so the stopping path is exercised
    stops = {ref[1][4], ref[2][2]}
    ref_stop = generate_naive(model, PROMPTS, max_new, temperature=0, stop_tokens=stops)
    assert any(len(r) < max_new for r in ref_stop)

    for stop_tokens, want in ((None, ref), (stops, ref_stop)):
        got = generate(model, PROMPTS, max_new, temperature=0, n_samples=n_samples,
                       stop_tokens=stop_tokens)
        assert len(got) == len(PROMPTS) * n_samples
        for i, w in enumerate(want):
            for j in range(n_samples):
                assert got[i * n_samples + j] == w, (i, j)


def test_output_layout_prompt_major():
    model = make_model(seed=3)
    # distinct prompts give distinct greedy completions: check rows land prompt-major
    ref = generate_naive(model, PROMPTS, 6, temperature=0)
    assert len({tuple(r) for r in ref}) == len(PROMPTS)
    got = generate(model, PROMPTS, 6, temperature=0, n_samples=2)
    assert got == [ref[0], ref[0], ref[1], ref[1], ref[2], ref[2]]

    # sampled (T=1): every completion is cut after its first stop token, the stop kept
    stops = set(range(1, 9))
    out = generate(make_model(seed=4, scale=None), PROMPTS, 10, temperature=1.0, n_samples=4,
                   stop_tokens=stops, seed=0)
    assert len(out) == 12
    n_stopped = 0
    for c in out:
        assert 1 <= len(c) <= 10
        hits = [k for k, t in enumerate(c) if t in stops]
        if hits:
            assert hits[0] == len(c) - 1
            n_stopped += 1
        else:
            assert len(c) == 10
    assert 0 < n_stopped < len(out)


@pytest.mark.parametrize("temperature,top_k,top_p,stops", [
    (1.0, None, 1.0, [3, 7]), (0.7, 5, 1.0, [3, 7, 11, 19]), (1.3, None, 0.8, [3, 7])])
def test_sampled_matches_naive_reference(monkeypatch, temperature, top_k, top_p, stops):
    """Sampled, the cached sampler draws the naive reference's tokens (same keyed uniforms, same
    filtering): ragged prompts, n_samples, stop tokens, compaction down to 1 row and vocab_limit;
    its log-probs are a full forward's (tempered, unfiltered, padded ids masked)."""
    import nanorlsp.sampler_fast
    monkeypatch.setattr(nanorlsp.sampler_fast, "COMPACT_ROWS", 1)
    model = make_model(seed=16, scale=None)       # near-uniform: draws really vary
    prompts, G, limit = ragged_batch(16, n_prompts=6), 3, 60
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, n_samples=G,
              stop_tokens=stops, seed=4, vocab_limit=limit)
    ref = generate_naive(model, prompts, 24, **kw)
    sizes = spy_compactions(monkeypatch)
    r = sample(model, prompts, 24, return_logprobs=True, **kw)
    assert r.completions() == ref
    assert "stop" in r.finish and "length" in r.finish and len(sizes) >= 2
    assert len({tuple(c) for c in ref[:G]}) > 1           # a prompt's samples differ
    for b, comp in enumerate(ref):
        logits = full_logits(model, prompts[b // G], comp)
        logits[:, limit:] = float("-inf")
        want = torch.log_softmax(logits / temperature, -1)
        want = want.gather(-1, torch.tensor(comp)[:, None])[:, 0]
        torch.testing.assert_close(r.logprobs[b, :len(comp)], want, atol=1e-5, rtol=0)


# -----------------------------------------------------------------------------
# Seeds

def test_seeded_determinism():
    model = make_model(seed=5, scale=None)       # near-uniform over 64 tokens
    kw = dict(max_new_tokens=16, temperature=1.0, n_samples=2)
    a = sample(model, PROMPTS, seed=123, **kw).tokens
    b = sample(model, PROMPTS, seed=123, **kw).tokens
    c = sample(model, PROMPTS, seed=124, **kw).tokens
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the n_samples rows of one prompt are different draws, not copies
    assert not torch.equal(a[0], a[1])
    d = sample(model, PROMPTS, seed=None, **kw)
    assert d.tokens.shape == (6, 16)
    assert ((d.tokens >= 0) & (d.tokens < V)).all()


def test_long_generation_crosses_attention_buckets():
    """Decode attends over the filled slots rounded up to 64 (sampler_fast._bucket): a 150-token
    generation crosses two bucket edges (64, 128) and ends in the last partial bucket; greedy
    tokens equal the naive reference's and the log-probs equal a full forward's."""
    from nanorlsp.sampler_fast import _bucket
    model = make_model(seed=3, scale=0.1)
    max_new = 150
    assert _bucket(max(map(len, PROMPTS)) + max_new) == 64
    ref = generate_naive(model, PROMPTS, max_new, temperature=0)
    r = sample(model, PROMPTS, max_new, temperature=0, return_logprobs=True)
    assert r.completions() == ref
    for b, p in enumerate(PROMPTS):
        want = torch.log_softmax(full_logits(model, p, ref[b]), -1)
        want = want.gather(-1, torch.tensor(ref[b])[:, None])[:, 0]
        torch.testing.assert_close(r.logprobs[b], want, atol=1e-5, rtol=0)
    assert _bucket(64 * 8) == 64 and _bucket(64 * 8 + 1) == 128 and _bucket(4096) == 512


# -----------------------------------------------------------------------------
# Rollout: log-probs, mask, lengths, finish

@pytest.mark.parametrize("temperature,top_k", [(0.7, None), (1.3, 5), (0.0, None)])
def test_logprobs_match_full_forward(temperature, top_k):
    model = make_model(seed=6, scale=0.1)
    stops = [3, 11, 17, 29]
    max_new = 12
    pad_id = V - 1
    r = sample(model, PROMPTS, max_new, temperature=temperature, top_k=top_k, n_samples=3,
               stop_tokens=stops, seed=7, return_logprobs=True, pad_id=pad_id)
    B = len(PROMPTS) * 3
    assert r.tokens.shape == r.mask.shape == r.logprobs.shape == (B, max_new)
    assert r.lengths.shape == (B,) and len(r.finish) == B
    if temperature > 0:
        assert set(r.finish) == {"stop", "length"}   # both cases exercised (fixed seed)
    comps = r.completions()
    for b in range(B):
        n = int(r.lengths[b])
        prompt = PROMPTS[b // 3]
        assert comps[b] == r.tokens[b, :n].tolist()
        assert r.mask[b].tolist() == [1.0] * n + [0.0] * (max_new - n)
        if r.finish[b] == "stop":
            assert comps[b][-1] in stops
            assert not any(t in stops for t in comps[b][:-1])
        else:
            assert n == max_new
            assert not any(t in stops for t in comps[b])
        # after a row finished: padding and zero log-prob
        assert (r.tokens[b, n:] == pad_id).all()
        assert (r.logprobs[b, n:] == 0).all()
        logits = full_logits(model, prompt, comps[b])
        scaled = logits / temperature if temperature > 0 else logits
        want = torch.log_softmax(scaled, -1).gather(-1, torch.tensor(comps[b])[:, None])[:, 0]
        torch.testing.assert_close(r.logprobs[b, :n], want, atol=1e-5, rtol=0)
        assert (r.logprobs[b, :n] < 0).all()


def test_logprobs_off_by_default():
    r = sample(make_model(), PROMPTS, 3, temperature=0)
    assert r.logprobs is None
    assert r.finish == ["length"] * 3 and r.lengths.tolist() == [3, 3, 3]


# -----------------------------------------------------------------------------
# top-k / top-p

def test_top_k_1_and_tiny_top_p_are_greedy():
    model = make_model(seed=8)
    greedy = generate(model, PROMPTS, 10, temperature=0, n_samples=2)
    k1 = generate(model, PROMPTS, 10, temperature=1.5, top_k=1, n_samples=2, seed=0)
    p0 = generate(model, PROMPTS, 10, temperature=1.5, top_p=1e-6, n_samples=2, seed=0)
    assert k1 == greedy
    assert p0 == greedy
    # and plain sampling at that temperature does differ (the comparison can fail)
    assert generate(model, PROMPTS, 10, temperature=1.5, n_samples=2, seed=0) != greedy


def test_top_k_samples_within_top_k():
    model = make_model(seed=9, scale=None)     # near-uniform: unrestricted draws leave the top k
    k = 4
    r = sample(model, PROMPTS, 10, temperature=1.0, top_k=k, n_samples=3, seed=1)
    outside = 0
    free = sample(model, PROMPTS, 10, temperature=1.0, n_samples=3, seed=1)
    for b, (comp, fcomp) in enumerate(zip(r.completions(), free.completions())):
        prompt = PROMPTS[b // 3]
        top = full_logits(model, prompt, comp).topk(k, -1).indices
        for t, tok in enumerate(comp):
            assert tok in top[t].tolist(), (b, t)
        ftop = full_logits(model, prompt, fcomp).topk(k, -1).indices
        outside += sum(tok not in ftop[t].tolist() for t, tok in enumerate(fcomp))
    assert outside > 0


# -----------------------------------------------------------------------------
# Finished rows, bad input

def test_finished_rows_are_padded():
    model = make_model(seed=10)
    ref = generate_naive(model, PROMPTS, 8, temperature=0)
    stop = ref[0][1]                     # prompt 0 stops at its second token
    pad_id = 42
    r = sample(model, PROMPTS, 8, temperature=0, stop_tokens=[stop], pad_id=pad_id)
    assert r.finish[0] == "stop" and r.lengths[0] == ref[0].index(stop) + 1
    for b in range(len(PROMPTS)):
        n = int(r.lengths[b])
        assert (r.tokens[b, n:] == pad_id).all()
        assert r.tokens[b, :n].tolist() == generate_naive(model, [PROMPTS[b]], 8, temperature=0,
                                                       stop_tokens={stop})[0]
    # the other rows kept going while row 0 was finished
    assert int(r.lengths.max()) > int(r.lengths[0])


@pytest.mark.parametrize("prompts,max_new,n_samples", [
    ([], 4, 1),            # no prompts
    ([[1, 2], []], 4, 1),  # an empty prompt
    ([[1, 2]], 0, 1),      # nothing to generate
    ([[1, 2]], 4, 0),      # no samples
])
def test_bad_input_raises(prompts, max_new, n_samples):
    model = make_model()
    with pytest.raises(ValueError):
        sample(model, prompts, max_new, n_samples=n_samples)
    with pytest.raises(ValueError):
        generate(model, prompts, max_new, n_samples=n_samples)


def test_vocab_limit_never_samples_padded_ids():
    """The embedding is padded past the tokenizer's vocabulary; those ids must never come out,
    even from a model that strongly prefers them, and log-probs are of the masked distribution."""
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_kv_head=1, n_embd=32)).eval()
    with torch.no_grad():
        m.lm_head.weight[40:] += 5 * m.lm_head.weight[40:].sign()  # make padded ids likely
    free = sample(m, [[1, 2, 3]] * 4, 12, temperature=1.0, seed=0).tokens
    assert (free >= 40).any()  # without the limit they do come out
    for t in (0.0, 1.0):
        r = sample(m, [[1, 2, 3], [5]], 12, temperature=t, n_samples=4, seed=0,
                   return_logprobs=True, vocab_limit=40)
        assert (r.tokens < 40).all()
        assert torch.isfinite(r.logprobs).all()
    assert all(i < 40 for c in generate(m, [[1, 2]], 8, temperature=1.0, seed=1, vocab_limit=40)
               for i in c)


# -----------------------------------------------------------------------------
# torch.compile'd decode step

@pytest.mark.slow
def test_compiled_step_matches_eager():
    """compile=True gives the eager tokens on ragged prompts (with and without stop tokens,
    finished rows included), and a second call with the same shapes does not recompile."""
    model = make_model(seed=11)
    ref = generate_naive(model, PROMPTS, 8, temperature=0)
    stops = {next(t for t in ref[0][1:] if t not in ref[1] + ref[2])}   # row 0 stops early only
    for stop_tokens in (None, stops):
        kw = dict(temperature=0, n_samples=2, stop_tokens=stop_tokens)
        eager = sample(model, PROMPTS, 8, **kw)
        compiled = sample(model, PROMPTS, 8, compile=True, **kw)
        assert torch.equal(compiled.tokens, eager.tokens)
        assert torch.equal(compiled.lengths, eager.lengths)
        assert compiled.finish == eager.finish
    assert "stop" in compiled.finish and "length" in compiled.finish
    # same shapes again: served from the compiled cache, not traced again (per call or per step)
    if hasattr(torch.compiler, "set_stance"):                 # torch >= 2.6
        with torch.compiler.set_stance("fail_on_recompile"):
            again = generate(model, PROMPTS, 8, temperature=0, n_samples=2, compile=True)
        assert again == [r for r in ref for _ in range(2)]


def test_sampling_is_shard_invariant():
    """A row's tokens depend on (seed, row key) only: the batch split across two 'ranks' with
    their global row keys samples exactly what the whole batch samples (the DDP contract)."""
    model = make_model(scale=None)
    prompts = PROMPTS + [[3, 3, 3]]
    G = 2
    whole = sample(model, prompts, 12, temperature=1.0, n_samples=G, seed=7).tokens
    for r in range(2):
        mine = list(range(r, len(prompts), 2))
        keys = [i * G + j for i in mine for j in range(G)]
        part = sample(model, [prompts[i] for i in mine], 12, temperature=1.0, n_samples=G,
                      seed=7, row_keys=keys).tokens
        assert torch.equal(part, whole[keys])


def test_keyed_draw_follows_the_distribution():
    """Inverse-CDF draws with the keyed uniforms reproduce the probabilities (chi-square-sized
    tolerance over 20k draws) and never pick a zero-probability id."""
    from nanorlsp.sampler import _draw, row_uniforms
    probs = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.05, 0.0])
    u = row_uniforms(3, list(range(20000)), 1)[:, 0]
    ids = _draw(probs.expand(20000, -1), u)
    freq = torch.bincount(ids, minlength=6).double() / 20000
    assert freq[1] == 0 and freq[5] == 0
    assert torch.allclose(freq, probs.double(), atol=0.012)
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    # extreme uniforms still land on ids with probability > 0
    edge = _draw(probs.expand(2, -1), torch.tensor([0.0, 1.0 - 2 ** -53], dtype=torch.float64))
    assert edge.tolist() == [0, 4]


def test_packed_gqa_path_matches_naive_reference(monkeypatch):
    # the masked-GQA attention form used on CUDA (model.sdpa_gqa_masked), forced on CPU: greedy
    # rollouts still equal the naive reference token for token, log-probs the default path's
    import nanorlsp.model
    model = make_model(seed=4, n_head=4, n_kv_head=2)
    ref = generate_naive(model, PROMPTS, 12, temperature=0)
    base = sample(model, PROMPTS, 12, temperature=0, n_samples=2, return_logprobs=True)
    monkeypatch.setattr(nanorlsp.model, "PACKED_GQA_DEVICES", ("cuda", "cpu"))
    packed = sample(model, PROMPTS, 12, temperature=0, n_samples=2, return_logprobs=True)
    assert packed.completions() == [r for r in ref for _ in range(2)]
    torch.testing.assert_close(packed.logprobs, base.logprobs, atol=1e-5, rtol=0)


# -----------------------------------------------------------------------------
# Compaction: finished rows leave the decode batch

def ragged_batch(seed, n_prompts=8, vocab=V):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, 12, (n_prompts,), generator=g).tolist()
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lens]


def spy_compactions(monkeypatch):
    """Record the batch size of every compaction (KVCache.select_rows calls)."""
    from nanorlsp.model import KVCache
    sizes, orig = [], KVCache.select_rows

    def select_rows(self, idx):
        sizes.append(len(idx))
        return orig(self, idx)
    monkeypatch.setattr(KVCache, "select_rows", select_rows)
    return sizes


def assert_same_rollout(a, b):
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.lengths, b.lengths)
    assert a.finish == b.finish
    # a matmul over fewer rows may round differently: measured bit-identical on this CPU at
    # >= 8 rows with 1 thread, up to 3e-6 with 2 threads or 1-4 rows
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("min_rows", [8, 1])
@pytest.mark.parametrize("temperature,top_k,seed", [(0.0, None, 0), (1.0, None, 1), (0.8, 8, 2)])
def test_compaction_gives_the_same_rollout(monkeypatch, min_rows, temperature, top_k, seed):
    """compact=True (default) vs compact=False on ragged prompts with stop tokens: identical
    tokens, mask, lengths, finish reasons and (to float rounding) log-probs, greedy and sampled
    (each row keeps its own keyed uniforms), and the batch really shrank."""
    import nanorlsp.sampler_fast
    monkeypatch.setattr(nanorlsp.sampler_fast, "COMPACT_ROWS", min_rows)
    model = make_model(seed=seed, scale=0.3 if temperature == 0 else None)
    prompts = ragged_batch(seed)
    kw = dict(temperature=temperature, top_k=top_k, n_samples=4, stop_tokens=[3, 7, 11, 19],
              seed=5, return_logprobs=True, pad_id=V - 1)
    ref = sample(model, prompts, 40, compact=False, **kw)
    sizes = spy_compactions(monkeypatch)
    got = sample(model, prompts, 40, **kw)
    assert_same_rollout(got, ref)
    assert "stop" in ref.finish and "length" in ref.finish
    assert sizes and sizes == sorted(sizes, reverse=True) and min(sizes) >= min_rows
    assert set(sizes) <= set(nanorlsp.sampler_fast._compact_sizes(32))  # the static sizes only


def test_compaction_greedy_matches_naive_reference(monkeypatch):
    """Greedy with stops, compacting down to 1 row: every row equals the naive reference."""
    import nanorlsp.sampler_fast
    monkeypatch.setattr(nanorlsp.sampler_fast, "COMPACT_ROWS", 1)
    model = make_model(seed=12)
    prompts = ragged_batch(12, n_prompts=10)
    ref = generate_naive(model, prompts, 30, temperature=0)
    # stop tokens the reference emits at different steps: rows finish one after another
    stops = {r[k] for r, k in zip(ref, (1, 3, 6, 9, 14))}
    ref = generate_naive(model, prompts, 30, temperature=0, stop_tokens=stops)
    assert len({len(r) for r in ref}) >= 4
    sizes = spy_compactions(monkeypatch)
    got = generate(model, prompts, 30, temperature=0, n_samples=2, stop_tokens=stops)
    assert got == [r for r in ref for _ in range(2)]
    assert len(sizes) >= 2


def test_compaction_off_without_stop_tokens_or_small_batches(monkeypatch):
    sizes = spy_compactions(monkeypatch)
    model = make_model(seed=1)
    sample(model, ragged_batch(0), 12, temperature=0, n_samples=4)            # no stop tokens
    sample(model, PROMPTS, 12, temperature=0, n_samples=2, stop_tokens=range(V))  # 6 rows < 8
    assert sizes == []
    from nanorlsp.sampler_fast import _compact_sizes
    assert _compact_sizes(64) == [64, 48, 32, 24, 16, 8]
    assert _compact_sizes(128) == [128, 96, 72, 48, 32, 24, 16, 8]
    assert _compact_sizes(20) == [20, 8] and _compact_sizes(9) == [9] and _compact_sizes(1) == [1]


@pytest.mark.slow
def test_compaction_with_compile_gives_the_same_rollout(monkeypatch):
    """The compiled step through compaction (one graph per batch size and bucket)."""
    model = make_model(seed=13)
    prompts = ragged_batch(13)
    kw = dict(temperature=0, n_samples=2, stop_tokens=[3, 7, 11, 19], return_logprobs=True)
    ref = sample(model, prompts, 24, compact=False, **kw)
    sizes = spy_compactions(monkeypatch)
    got = sample(model, prompts, 24, compile=True, **kw)
    assert_same_rollout(got, ref)
    assert sizes == [8]                                         # 16 rows -> 8


# -----------------------------------------------------------------------------
# Streaming: on_token

def test_on_token_streams_the_rollout():
    """on_token sees every step's tokens (pad once a row is done) and the done flags; stacked they
    are the Rollout's tokens, and a row is done from its stop token on."""
    model = make_model(seed=14)
    prompts = ragged_batch(14, n_prompts=6)
    seen = []
    r = sample(model, prompts, 20, temperature=0, stop_tokens=[3, 7, 11, 19], pad_id=V - 1,
               on_token=lambda t, x, d: seen.append((t, x, d)))
    assert [t for t, _, _ in seen] == list(range(len(seen)))
    assert len(seen) == int(r.lengths.max())
    assert torch.equal(torch.stack([x for _, x, _ in seen], 1), r.tokens[:, :len(seen)])
    for t, _, done in seen:
        assert done.tolist() == [f == "stop" and n <= t + 1 for f, n in zip(r.finish, r.lengths)]
    # one prompt, as a chat script streams it: the pieces add up to the reply
    pieces = []
    out = generate(model, [prompts[0]], 20, temperature=0, stop_tokens=[3, 7, 11, 19])
    sample(model, [prompts[0]], 20, temperature=0, stop_tokens=[3, 7, 11, 19],
           on_token=lambda t, x, d: pieces.append(int(x[0])))
    assert pieces == out[0]


# -----------------------------------------------------------------------------
# The CUDA-graph path's bookkeeping, on CPU

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graphed_step_static_buffers(monkeypatch, dtype):
    """cuda_graph=True on CPU runs _GraphedStep without graphs: every (rows, attended slots) shape
    is 'captured' once, at its first step, and every later step of it must pass the same
    buffers (a graph replays fixed addresses; a moved input raises). Shapes: the compaction
    sizes x the 64-slot buckets each reaches, in order. The rollout equals the plain path's,
    in bf16 and with the CUDA attention form (packed GQA) forced, as on a GPU."""
    import nanorlsp.model
    import nanorlsp.sampler_fast
    monkeypatch.setattr(nanorlsp.model, "PACKED_GQA_DEVICES", ("cuda", "cpu"))
    made = []

    class Spy(nanorlsp.sampler_fast._GraphedStep):
        def __init__(self, *a):
            super().__init__(*a)
            made.append(self)
    monkeypatch.setattr(nanorlsp.sampler_fast, "_GraphedStep", Spy)
    model = make_model(seed=15, scale=0.1, n_head=4, n_kv_head=2).to(dtype)
    prompts = ragged_batch(15, n_prompts=6)
    kw = dict(temperature=1.0, n_samples=4, stop_tokens=[3, 7, 11, 19], seed=3,
              return_logprobs=True)
    max_new = 150                                   # crosses buckets 64 and 128 (Lp <= 11)
    ref = sample(model, prompts, max_new, **kw)
    assert made == []                               # off by default on CPU
    got = sample(model, prompts, max_new, cuda_graph=True, **kw)
    assert torch.equal(got.tokens, ref.tokens) and got.finish == ref.finish
    torch.testing.assert_close(got.logprobs, ref.logprobs, atol=0, rtol=0)
    (spy,) = made
    # the expected shapes, from the rollout alone: rows live before step t, the compacted size
    # that holds them, the bucket of slots step t attends
    from nanorlsp.sampler_fast import _bucket, _compact_sizes
    Lp, S, B = max(map(len, prompts)), max(map(len, prompts)) + max_new, 24
    lens = ref.lengths.tolist()
    want, size = [], B
    for t in range(1, max(lens)):
        n_live = sum(n > t for n in lens)
        size = min([s for s in _compact_sizes(B) if s >= n_live] + [size])
        shape = (size, min(S, _bucket(S) * -(-(Lp + t) // _bucket(S))))
        if shape not in want:
            want.append(shape)
    assert spy.shapes == want and len({s for s, _ in want}) >= 2 and len(want) >= 3
    # an input that is not the captured buffer is refused
    step = nanorlsp.sampler_fast._GraphedStep(nanorlsp.sampler_fast._decode_step,
                                             torch.device("cpu"))
    from nanorlsp.model import KVCache
    cache = KVCache(model.config, 2, 8, "cpu", dtype)
    tok, pos = torch.zeros((2, 1), dtype=torch.long), torch.zeros((2, 1), dtype=torch.long)
    slot, valid = torch.zeros(1, dtype=torch.long), torch.zeros((2, 8), dtype=torch.bool)
    with torch.no_grad():
        step(model, cache, tok, pos, slot, valid)
        step(model, cache, tok, pos, slot, valid)
        with pytest.raises(RuntimeError, match="moved"):
            step(model, cache, tok.clone(), pos, slot, valid)
