"""
Tests for nanorlsp/model.py: shapes and config bookkeeping, causality, GQA == MHA with repeated
kv heads, RoPE's relative-position property, Llama 3.1 frequency scaling against hand-computed
values, float32 rotary frequencies through dtype casts (a bf16 copy's error flat along 6k
positions), the KV-cache path against the plain path, optimizer groups and gradients, float32
logits under bf16 autocast and in a bf16 model (within 1e-5: another GEMM shape sums in another
order), the one-line warning for --dtype bfloat16 on a CPU without bf16 units, masked GQA's packed
form (CUDA) == enable_gqa;
LoRA: zero-initialised adapters give the base logits exactly, lora_disabled is the base, merged
equals unmerged, only the adapters train.
Hermetic, seeded, tiny configs; a few seconds on CPU.

    python -m pytest tests/test_model.py -q
"""
import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import TINY, make_model, one_thread  # noqa: F401 (autouse fixture)
from nanorlsp.model import (GPT, LORA_TARGETS, KVCache, ModelConfig, add_lora, apply_rope,
                            is_lora_key, lora_disabled, merge_lora, rope_cos_sin, rope_inv_freq)


def rand_idx(B, T, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g)


# -----------------------------------------------------------------------------
# Shapes and config

def test_output_shape_and_dtype():
    model = make_model()
    idx = rand_idx(3, 7, 64)
    logits = model(idx)
    assert logits.shape == (3, 7, 64)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_config_defaults():
    cfg = ModelConfig(n_embd=96, n_head=4, n_kv_head=2)
    assert cfg.head_dim == 24
    assert cfg.intermediate_size == 256            # 8/3 * 96 = 256, already a multiple of 64
    cfg = ModelConfig(n_embd=128, n_head=4)
    assert cfg.head_dim == 32
    assert cfg.intermediate_size == 384            # 8/3 * 128 = 341.3 -> 384
    assert cfg.intermediate_size % 64 == 0
    # explicit values are kept
    cfg = ModelConfig(n_embd=32, n_head=4, head_dim=16, intermediate_size=100)
    assert (cfg.head_dim, cfg.intermediate_size) == (16, 100)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = ModelConfig(**TINY, qkv_bias=True, tie_embeddings=True, rope_theta=500000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0})
    d = cfg.to_dict()
    assert ModelConfig.from_dict(d) == cfg
    assert ModelConfig.from_dict(d).to_dict() == d
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({**d, "bogus": 1})


def test_num_params_counts_tied_weights_once():
    untied = make_model(tie_embeddings=False)
    tied = make_model(tie_embeddings=True)
    emb = 64 * 32
    assert untied.num_params() - tied.num_params() == emb
    # hand count of the tied model: embedding + per layer (q, k, v, o, 3 MLP mats, 2 norms) + norm
    c = tied.config
    per_layer = (c.n_embd * c.n_head * c.head_dim + 2 * c.n_embd * c.n_kv_head * c.head_dim
                 + c.n_head * c.head_dim * c.n_embd + 3 * c.n_embd * c.intermediate_size
                 + 2 * c.n_embd)
    assert tied.num_params() == emb + c.n_layer * per_layer + c.n_embd
    assert tied.num_params(non_embedding=True) == tied.num_params() - emb


def test_tied_embeddings_and_qkv_bias():
    tied = make_model(tie_embeddings=True)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    untied = make_model(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.embed_tokens.weight

    biased = make_model(qkv_bias=True)
    names = {n for n, _ in biased.named_parameters() if n.endswith(".bias")}
    expected = {f"layers.{i}.attn.{p}.bias" for i in range(2) for p in ("q_proj", "k_proj", "v_proj")}
    assert names == expected
    assert not any(n.endswith(".bias") for n, _ in untied.named_parameters())


# -----------------------------------------------------------------------------
# Causality

@pytest.mark.parametrize("explicit_mask", [False, True])
def test_causality(explicit_mask):
    model = make_model(scale=0.3)
    T = 8
    idx = rand_idx(2, T, 64, seed=1)
    mask = None
    if explicit_mask:
        mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None].expand(2, 1, T, T)
    base = model(idx, attn_mask=mask)
    for t in range(1, T):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1 + torch.arange(2)) % 64
        out = model(changed, attn_mask=mask)
        torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
        # and the changed position itself does see the change (the test can fail)
        assert (out[:, t] - base[:, t]).abs().max() > 1e-3


# -----------------------------------------------------------------------------
# Grouped-query attention

def expand_kv(w, n_kv_head, n_rep, head_dim):
    """(n_kv_head*D, ...) -> (n_kv_head*n_rep*D, ...): kv head j becomes heads j*n_rep..j*n_rep+n_rep-1,
    matching SDPA's enable_gqa (query head h reads kv head h // n_rep)."""
    rest = w.shape[1:]
    w = w.view(n_kv_head, 1, head_dim, *rest).expand(n_kv_head, n_rep, head_dim, *rest)
    return w.reshape(n_kv_head * n_rep * head_dim, *rest)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_gqa_equals_mha_with_repeated_kv_heads(qkv_bias):
    gqa = make_model(seed=3, scale=0.3, n_head=4, n_kv_head=2, qkv_bias=qkv_bias)
    mha = make_model(seed=4, n_head=4, n_kv_head=4, qkv_bias=qkv_bias)
    D, n_rep = gqa.config.head_dim, 2
    sd = {}
    for k, v in gqa.state_dict().items():
        if ".k_proj." in k or ".v_proj." in k:
            v = expand_kv(v, 2, n_rep, D)
        sd[k] = v
    mha.load_state_dict(sd)
    idx = rand_idx(2, 9, 64, seed=5)
    torch.testing.assert_close(mha(idx), gqa(idx), atol=1e-5, rtol=1e-5)

    # the wrong grouping (tiling kv heads: h -> h % n_kv_head) must differ, so the order matters
    wrong = {k: (v.view(1, 2 * D, *v.shape[1:]).expand(n_rep, 2 * D, *v.shape[1:])
                 .reshape(4 * D, *v.shape[1:]) if (".k_proj." in k or ".v_proj." in k) else v)
             for k, v in gqa.state_dict().items()}
    mha.load_state_dict(wrong)
    assert (mha(idx) - gqa(idx)).abs().max() > 1e-3


# -----------------------------------------------------------------------------
# Rotary embeddings

def test_rope_depends_only_on_relative_position():
    cfg = ModelConfig(**{**TINY, "head_dim": 16})
    inv_freq = rope_inv_freq(cfg)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, 16, generator=g)
    k = torch.randn(1, 1, 1, 16, generator=g)

    def dot(m, n):
        cm, sm = rope_cos_sin(torch.tensor([[m]]), inv_freq, torch.float32)
        cn, sn = rope_cos_sin(torch.tensor([[n]]), inv_freq, torch.float32)
        return (apply_rope(q, cm, sm) * apply_rope(k, cn, sn)).sum().item()

    for (m, n), (m2, n2) in [((5, 2), (105, 102)), ((2, 5), (40, 43)), ((7, 7), (0, 0)),
                             ((0, 11), (200, 211))]:
        assert abs(dot(m, n) - dot(m2, n2)) < 1e-4
    # but it does depend on the offset, and rotation keeps norms
    assert abs(dot(5, 2) - dot(5, 3)) > 1e-3
    c, s = rope_cos_sin(torch.tensor([[37]]), inv_freq, torch.float32)
    torch.testing.assert_close(apply_rope(q, c, s).norm(), q.norm())


def test_model_invariant_to_position_shift():
    model = make_model(scale=0.3)
    idx = rand_idx(2, 8, 64, seed=2)
    base = model(idx)
    for shift in (3, 100):
        pos = (torch.arange(8) + shift).expand(2, 8)
        torch.testing.assert_close(model(idx, positions=pos), base, atol=1e-4, rtol=0)
    # a non-uniform change of positions is visible
    pos = torch.arange(8).expand(2, 8) * 2
    assert (model(idx, positions=pos) - base).abs().max() > 1e-3


def test_llama3_rope_scaling_matches_hand_computation():
    head_dim, theta = 16, 500000.0
    factor, low_ff, high_ff, old_ctx = 8.0, 1.0, 4.0, 8192
    cfg = ModelConfig(**{**TINY, "head_dim": head_dim}, rope_theta=theta,
                      rope_scaling={"rope_type": "llama3", "factor": factor,
                                    "low_freq_factor": low_ff, "high_freq_factor": high_ff,
                                    "original_max_position_embeddings": old_ctx})
    got = rope_inv_freq(cfg).tolist()
    assert len(got) == head_dim // 2
    bands = set()
    for i in range(head_dim // 2):
        f = theta ** (-(2 * i) / head_dim)
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high_ff:           # < 2048: high frequency, unchanged
            want, band = f, "high"
        elif wavelen > old_ctx / low_ff:          # > 8192: low frequency, slowed 8x
            want, band = f / factor, "low"
        else:                                     # in between: smooth blend
            s = (old_ctx / wavelen - low_ff) / (high_ff - low_ff)
            want, band = ((1 - s) / factor + s) * f, "medium"
        bands.add(band)
        assert got[i] == pytest.approx(want, rel=1e-6), (i, band)
    assert bands == {"high", "medium", "low"}

    # without scaling: plain theta^(-2i/d)
    plain = rope_inv_freq(ModelConfig(**{**TINY, "head_dim": head_dim}, rope_theta=theta))
    for i, v in enumerate(plain.tolist()):
        assert v == pytest.approx(theta ** (-(2 * i) / head_dim), rel=1e-6)


def test_unsupported_rope_type_raises():
    cfg = ModelConfig(**TINY, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="yarn"):
        rope_inv_freq(cfg)
    with pytest.raises(ValueError, match="yarn"):
        GPT(cfg)


def test_rotary_frequencies_stay_float32_through_dtype_casts(tmp_path):
    # nn.Module.to(dtype) casts every floating buffer; inv_freq in bf16 is off by up to 2^-9
    # relative, an angle error that grows with distance. It must be the float32 rope_inv_freq
    # after every cast, the rollout copy's refresh and every loader's dtype.
    from nanorlsp import dist
    from nanorlsp.checkpoint import model_from_state
    model = make_model(rope_theta=500000.0)
    want = rope_inv_freq(model.config)
    copy = GPT(model.config).to(dtype=torch.bfloat16)
    dist.copy_full_state(model, copy)        # the RL rollout copy: GPT(cfg).to(bf16), refreshed
    copies = {"to(bfloat16)": copy, "half()": GPT(model.config).half(),
              "bfloat16().float()": GPT(model.config).bfloat16().float(),
              "model_from_state(bf16)": model_from_state(
                  {"model_config": model.config.to_dict(), "model": model.state_dict()},
                  dtype=torch.bfloat16)}
    if importlib.util.find_spec("safetensors"):
        from nanorlsp.tooling import hf
        hf.save_hf(model, None, str(tmp_path))
        copies["load_hf_dir(bf16)"] = hf.load_hf_dir(str(tmp_path), dtype=torch.bfloat16)
    for how, m in copies.items():
        assert m.inv_freq.dtype == torch.float32, how
        assert torch.equal(m.inv_freq, want), how
    assert copy.embed_tokens.weight.dtype == torch.bfloat16   # the weights were cast


def test_bf16_copy_error_does_not_grow_with_position():
    # A bf16 copy of the model differs from it by bf16 rounding of the weights: a constant
    # error. Rotary frequencies rounded to bf16 add an angle error proportional to the distance
    # between query and key, so the copy's log-prob error would grow along a long sequence
    # (measured before the fix: 5x larger at positions 3000-6000 than at 0-1000).
    model = make_model(scale=0.1, vocab_size=256, n_embd=64, max_seq_len=8192)
    copy = GPT(model.config).to(dtype=torch.bfloat16).eval()
    copy.load_state_dict(model.state_dict())
    T = 256
    idx = rand_idx(4, T, 256, seed=7)
    pos = (torch.arange(T) * 24).expand(4, T)          # positions 0 .. 6120, every 24th
    with torch.no_grad():
        ref = torch.log_softmax(model(idx, positions=pos), -1)
        lp = torch.log_softmax(copy(idx, positions=pos).float(), -1)
    err = (lp - ref).abs().mean(-1).mean(0)             # (T,) mean |log-prob error| per position
    early, late = err[: T // 6].mean(), err[T // 2:].mean()   # positions < 1000, > 3000
    assert late < 1.25 * early, (early.item(), late.item())


# -----------------------------------------------------------------------------
# KV cache

def test_kv_cache_chunks_equal_full_forward():
    model = make_model(scale=0.3, qkv_bias=True)
    B, T = 2, 10
    idx = rand_idx(B, T, 64, seed=7)
    full = model(idx)
    cache = KVCache(model.config, B, T, device="cpu", dtype=torch.float32)
    slots = torch.arange(T)
    start = 0
    for size in (5, 3, 1, 1):
        end = start + size
        index = slots[start:end]
        mask = (slots[None, :] <= index[:, None])[None, None].expand(B, 1, size, T)  # (B,1,Tc,S)
        out = model(idx[:, start:end], positions=index.expand(B, size), kv_cache=cache,
                    cache_index=index, attn_mask=mask)
        torch.testing.assert_close(out, full[:, start:end], atol=1e-5, rtol=1e-5)
        start = end
    assert start == T
    torch.testing.assert_close(out[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)


def test_kv_cache_requires_cache_index():
    model = make_model()
    cache = KVCache(model.config, 1, 4, device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError):
        model(rand_idx(1, 2, 64), kv_cache=cache)


# -----------------------------------------------------------------------------
# Optimizer groups and gradients

@pytest.mark.parametrize("tie", [False, True])
def test_optim_groups_partition_parameters(tie):
    model = make_model(qkv_bias=True, tie_embeddings=tie)
    decay, no_decay = model.optim_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    grouped = [id(p) for p in decay["params"]] + [id(p) for p in no_decay["params"]]
    assert len(grouped) == len(set(grouped))                      # nothing twice
    assert set(grouped) == {id(p) for p in model.parameters()}    # nothing missing
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert all(p.dim() >= 2 for p in decay["params"])
    assert any("norm" in n for n in no_decay_names)
    assert any(n.endswith(".bias") for n in no_decay_names)
    assert id(model.embed_tokens.weight) in {id(p) for p in decay["params"]}


def test_backward_gives_finite_grads_everywhere():
    model = make_model(qkv_bias=True).train()
    idx = rand_idx(2, 8, 64, seed=9)
    logits = model(idx[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, 64), idx[:, 1:].reshape(-1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_logits_at_equals_gathered_full_logits():
    """logits_at picks positions before the LM head: the same logits and hidden states as a full
    forward gathered there, and gradients flow only through the chosen positions' head rows."""
    model = make_model(seed=5)
    idx = torch.randint(0, model.config.vocab_size, (3, 10))
    at = torch.tensor([[2, 3, 4], [0, 1, 9], [5, 5, 6]])
    full, h = model(idx, return_hidden=True)
    part, hp = model(idx, return_hidden=True, logits_at=at)
    assert part.shape == (3, 3, model.config.vocab_size) and hp.shape == (3, 3, model.config.n_embd)
    torch.testing.assert_close(part, full.gather(1, at[..., None].expand(-1, -1, full.size(-1))))
    torch.testing.assert_close(hp, h.gather(1, at[..., None].expand(-1, -1, h.size(-1))))


def test_flops_per_token_counts_the_tied_head():
    """6 x every weight matrix (the tied LM head too) + attention's 12 L H D T."""
    for tie in (False, True):
        model = make_model(seed=0, tie_embeddings=tie)
        c = model.config
        mats = (c.n_layer * (c.n_embd * (c.n_head + 2 * c.n_kv_head) * c.head_dim
                             + c.n_head * c.head_dim * c.n_embd + 3 * c.n_embd * c.intermediate_size)
                + c.vocab_size * c.n_embd)
        assert model.flops_per_token(100) == 6 * mats + 12 * c.n_layer * c.n_head * c.head_dim * 100


# -----------------------------------------------------------------------------
# The LM head in float32: log-probs from float32 logits, not bf16-rounded ones

def _head_error(logits, h, weight):
    """Max error of logits against the float64 head on the same hidden states, relative to the
    largest logit. A bf16-rounded logit is off by up to 2^-9 relative (4e-3 at spacing 0.125
    around |logit| 20); float32 products and sums give ~1e-7."""
    ref = F.linear(h.double(), weight.double())
    return ((logits.double() - ref).abs().max() / ref.abs().max()).item()


def test_logits_are_float32_precise_under_bf16_autocast():
    # training: float32 master weights under bf16 autocast; the head must not run in bf16
    model = make_model(scale=0.3, tie_embeddings=True)
    idx = rand_idx(2, 9, 64, seed=11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, h = model(idx, return_hidden=True)
        part = model(idx, logits_at=torch.tensor([[8], [3]]))       # the RL loss's path
    assert logits.dtype == h.dtype == part.dtype == torch.float32
    assert _head_error(logits, h, model.lm_head.weight) < 1e-5
    # the same float32 head on 2 rows vs 18: another GEMM shape, another summation order (7e-7
    # apart on AVX2); a head run in bf16 would be ~1e-2 off
    torch.testing.assert_close(part[:, 0], torch.stack([logits[0, 8], logits[1, 3]]),
                               rtol=1e-5, atol=1e-5)
    logits.sum().backward()                                          # and it trains
    assert torch.isfinite(model.lm_head.weight.grad).all()


@pytest.mark.parametrize("tie", [False, True])
def test_logits_are_float32_precise_in_a_bf16_model(tie):
    # the sampler's rollout copy: bf16 weights. The final norm's output stays float32 (not
    # rounded back to bf16) and the head multiplies it by the exact float32 value of its weights
    model = make_model(scale=0.3, tie_embeddings=tie).to(torch.bfloat16)
    seen = {}
    model.norm.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0], y=out))
    idx = rand_idx(2, 9, 64, seed=12)
    with torch.no_grad():
        logits, h = model(idx, return_hidden=True)
    assert logits.dtype == h.dtype == seen["y"].dtype == torch.float32
    x = seen["x"].double()
    want = model.norm.weight.double() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)
                                                       + model.config.rms_norm_eps)
    torch.testing.assert_close(seen["y"].double(), want, rtol=1e-6, atol=1e-6)
    assert _head_error(logits, h, model.lm_head.weight) < 1e-5


# -----------------------------------------------------------------------------
# --dtype bfloat16 on a CPU without bf16 units: one warning line (the scripts' resolve_dtype)

def test_bf16_on_a_cpu_without_bf16_units_says_so_once(monkeypatch, capsys):
    from nanorlsp import common
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(common, "cpu_has_fast_bf16", lambda: False)
    assert common.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "~500x slower" in err[0] and "--dtype float32" in err[0], err
    # nothing to say: float32 (auto's choice on CPU), a GPU, a second torchrun rank, fast bf16
    assert common.resolve_dtype("auto", "cpu") == common.resolve_dtype("float32", "cpu")
    common.resolve_dtype("bfloat16", "cuda")
    monkeypatch.setenv("RANK", "1")
    common.resolve_dtype("bfloat16", "cpu")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(common, "cpu_has_fast_bf16", lambda: True)
    common.resolve_dtype("bfloat16", "cpu")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("capability,flags,fast", [
    ("AVX2", "fpu avx avx2 fma", False),              # the CI CPU of a 2-core AMD EPYC
    ("AVX2", "fpu avx2 avx512f avx512_bf16", True),   # ATen capped at AVX2, bf16 units there
    ("AVX2", "fp asimd sve bf16", True),              # Arm with the bf16 extension
    ("AVX512", "fpu avx2 avx512f", True),             # oneDNN converts on the fly
    ("AVX2", None, True)])                            # no /proc/cpuinfo: unknown, no warning
def test_cpu_has_fast_bf16_reads_the_cpu_flags(monkeypatch, capability, flags, fast):
    import io
    from nanorlsp import common

    def fake_open(path, *a, **kw):
        if flags is None:
            raise FileNotFoundError(path)
        return io.StringIO(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(common, "open", fake_open, raising=False)
    assert common.cpu_has_fast_bf16() is fast


# -----------------------------------------------------------------------------
# Masked grouped-query attention in the form CUDA's fused kernels take

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,H,Hkv,T,S", [(32, 9, 3, 1, 320),    # a decode step (SmolLM2 heads)
                                         (3, 4, 2, 7, 7),       # a prefill over its own slots
                                         (2, 14, 2, 13, 64)])   # Qwen2-0.5B heads, longer cache
def test_packed_gqa_attention_equals_enable_gqa(dtype, B, H, Hkv, T, S):
    # with a mask, SDPA's enable_gqa runs the math kernel on CUDA; sdpa_gqa_masked folds each kv
    # head's query heads into the query axis instead: the same attention, Hq == Hkv, no copy of k/v
    from nanorlsp.model import sdpa_gqa_masked
    g = torch.Generator().manual_seed(13)
    D = 64
    q = torch.randn(B, T, H, D, generator=g).to(dtype).transpose(1, 2)    # (B, H, T, D) view
    k, v = (torch.randn(B, Hkv, S, D, generator=g).to(dtype) for _ in range(2))
    mask = torch.rand(B, 1, T, S, generator=g) < 0.6
    mask[..., 0] = True                                                     # no empty rows
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    got = sdpa_gqa_masked(q, k, v, mask)
    assert got.shape == want.shape == (B, H, T, D)
    tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else {}
    torch.testing.assert_close(got, want, **tol)
    # a (B, 1, 1, S) mask broadcasts over the queries, as in the sampler's decode
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, :, -1:], enable_gqa=True)
    torch.testing.assert_close(sdpa_gqa_masked(q, k, v, mask[:, :, -1:]), want, **tol)


def test_float64_model_runs_in_float64():
    """GPT(cfg).double() (reference checks in float64) keeps float64 through the final norm and
    the LM head, which otherwise run in float32 (the bf16 log-prob fix): equal to the float32
    model to float32 precision."""
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=64, n_layer=1, n_embd=32, n_head=2, n_kv_head=1))
    idx = torch.randint(0, 64, (2, 7))
    l32 = m(idx)
    l64 = m.double()(idx)
    assert l64.dtype == torch.float64 and torch.allclose(l64.float(), l32, atol=1e-5)


# -----------------------------------------------------------------------------
# LoRA

def randomize_adapters(model, seed=0, scale=0.3):
    """Nonzero B (a fresh adapter's is zero) so the adapters change the function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("case", ["fp32", "autocast", "bf16", "bias+tied", "fp64"])
def test_zero_initialised_adapters_give_the_base_logits_exactly(case):
    over = dict(qkv_bias=True, tie_embeddings=True) if case == "bias+tied" else {}
    model = make_model(scale=0.3, **over)
    if case == "bf16":
        model = model.bfloat16()
    if case == "fp64":
        model = model.double()
    idx = rand_idx(2, 16, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        base = model(idx)
        add_lora(model, rank=4, alpha=8)
        lora = model(idx)
    assert torch.equal(base, lora)      # B = 0: the adapters add exactly 0.0
    a = model.layers[0].attn.q_proj.lora_A
    assert a.dtype == (torch.float64 if case == "fp64" else torch.float32)
    assert a.abs().max() > 0            # A is initialised (only B is zero)


@pytest.mark.parametrize("bf16", [False, True])
def test_lora_disabled_is_the_base_exactly(bf16):
    model = make_model(scale=0.3, qkv_bias=True)
    if bf16:
        model = model.bfloat16()
    idx = rand_idx(2, 16, 64)
    base = model(idx)
    add_lora(model, rank=4, alpha=8)
    randomize_adapters(model)
    lora = model(idx)
    assert (lora - base).abs().max() > 1e-2   # the adapters change the function
    with lora_disabled(model):
        assert torch.equal(model(idx), base)
    assert torch.equal(model(idx), lora)      # switched back on after the block
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with lora_disabled(make_model()):
            pass


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_merged_equals_unmerged(dtype, atol):
    model = make_model(scale=0.3, qkv_bias=True).to(dtype)
    base_keys = set(model.state_dict())
    add_lora(model, rank=4, alpha=16, targets=("q_proj", "v_proj", "down_proj"))
    randomize_adapters(model)
    idx = rand_idx(2, 16, 64)
    unmerged = model(idx)
    merge_lora(model)
    assert set(model.state_dict()) == base_keys and model.lora is None   # a plain base model
    merged = model(idx)
    assert (unmerged - merged).abs().max() < atol


def test_merge_rounds_a_bf16_base_once():
    # the update is added in float32 and the sum rounded to bf16 once
    model = make_model(scale=0.3).bfloat16()
    w0 = model.layers[0].mlp.up_proj.weight.clone()
    add_lora(model, rank=2, alpha=2)
    randomize_adapters(model, scale=1e-3)
    m = model.layers[0].mlp.up_proj
    want = (w0.float() + m.lora_B @ m.lora_A).bfloat16()
    merge_lora(model)
    assert torch.equal(model.layers[0].mlp.up_proj.weight, want)


def test_only_the_adapters_train():
    model = make_model(scale=0.3, n_kv_head=2).train()
    r, c = 4, model.config
    add_lora(model, rank=r, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_lora_key(n) for n in trainable)
    assert len(trainable) == 2 * len(LORA_TARGETS) * c.n_layer
    q, kv, C, ffn = c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_embd, c.intermediate_size
    per_layer = r * ((C + q) + 2 * (C + kv) + (q + C) + 2 * (C + ffn) + (ffn + C))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == c.n_layer * per_layer
    groups = model.optim_groups(0.1)
    assert {id(p) for g in groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad}
    model(rand_idx(2, 16, 64)).square().mean().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == is_lora_key(n), n
    # B's gradient is nonzero at B = 0; A's is zero there (its gradient goes through B)
    assert model.layers[0].attn.q_proj.lora_B.grad.abs().max() > 0


def test_bad_lora_settings_are_refused():
    for kw in (dict(rank=0, alpha=1), dict(rank=2, alpha=0),
               dict(rank=2, alpha=1, targets=("q_proj", "lm_head")),
               dict(rank=2, alpha=1, targets=())):
        with pytest.raises(ValueError, match="LoRA needs rank"):
            add_lora(make_model(), **kw)
    model = add_lora(make_model(), rank=2, alpha=1)
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model, rank=2, alpha=1)
