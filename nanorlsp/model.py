"""
One Llama-style decoder for every size: the tiny from-scratch model and real Llama 3.x / Qwen2
checkpoints run through this same class and code path.

    from nanorlsp.model import GPT, ModelConfig
    model = GPT(ModelConfig())              # the tiny default
    logits = model(idx)                     # idx (B, T) int64 -> logits (B, T, vocab_size)

Architecture (Touvron et al. 2023; Dubey et al. 2024 for Llama 3; Qwen2 adds q/k/v biases):
token embedding -> n_layer x [RMSNorm -> grouped-query attention with rotary embeddings ->
residual, RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head (optionally tied).
Cache hooks, so the KV-cached sampler never forks the model: forward(idx, positions (B, T),
kv_cache (static per-layer (B, n_kv_head, max_len, head_dim) buffers, written in place at
cache_index (T,)), attn_mask (B, 1, T, S) bool, True = may attend, causal without one,
logits_at (B, Tn): the LM head at those positions only). How they are used: docs/sampler.md.
LoRA (Hu et al. 2021), no PEFT: add_lora, lora_disabled (the base alone: RL's reference),
merge_lora. Rotary layout: HF's "rotate half" (the halves of head_dim are the real and
imaginary parts), so HF weights load unpermuted; the GGUF loader un-interleaves q/k.
"""
import contextlib
import math
from dataclasses import dataclass, asdict
from typing import NamedTuple

import torch
import torch.utils.checkpoint
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int = 320          # tiny default; set from the tokenizer (rounded up to 64)
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4             # < n_head: grouped-query attention (GQA)
    n_embd: int = 128
    head_dim: int = 0              # 0: n_embd // n_head (Qwen/Llama set it explicitly)
    intermediate_size: int = 0     # SwiGLU hidden width; 0: ~8/3 * n_embd rounded up to 64
    max_seq_len: int = 512         # longest sequence the model is trained / sampled with
    rope_theta: float = 10000.0
    # Llama 3.1 frequency scaling, e.g. {"rope_type": "llama3", "factor": 8.0,
    # "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    rope_scaling: dict | None = None
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False         # Qwen2 has biases on q, k, v projections
    tie_embeddings: bool = False   # LM head shares the token embedding (Qwen2-0.5B, SmolLM2)
    arch: str = "nanorlsp"         # where the weights came from: nanorlsp | llama | qwen2

    # (lowest, highest) of the integer fields. The caps sit far above any real model (Llama 3.1
    # 405B: 126 layers, 16384 wide, 53248 MLP; Gemma's 262k vocabulary; 10M-token contexts) and
    # catch a broken config before GPT() spends many minutes building 200,000 layers, even on
    # the meta device. head_dim and intermediate_size 0 mean "derive from n_embd".
    INT_RANGES = {"vocab_size": (1, 1 << 22), "n_layer": (1, 1024), "n_head": (1, 1024),
                  "n_kv_head": (1, 1024), "n_embd": (1, 1 << 17), "head_dim": (0, 4096),
                  "intermediate_size": (0, 1 << 20), "max_seq_len": (1, 1 << 24)}

    def __post_init__(self):
        """Check every field's type and range: ValueError with one line naming the field."""
        for name, (lo, hi) in self.INT_RANGES.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"model config {name} must be an integer in [{lo}, {hi}], "
                                 f"got {v!r}")
        for name in ("rope_theta", "rms_norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"model config {name} must be a positive number, got {v!r}")
        for name, kind in (("qkv_bias", bool), ("tie_embeddings", bool), ("arch", str),
                           ("rope_scaling", (dict, type(None)))):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"model config {name} has the wrong type: "
                                 f"{getattr(self, name)!r}")
        rs = self.rope_scaling
        if rs is not None and rs.get("rope_type", rs.get("type")) == "llama3":
            # the numbers rope_inv_freq divides by (its defaults where absent)
            nums = [rs.get("factor"), rs.get("low_freq_factor", 1.0),
                    rs.get("high_freq_factor", 4.0), rs.get("original_max_position_embeddings", 8192)]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
                       for v in nums) or nums[2] <= nums[1]:
                raise ValueError("model config rope_scaling (llama3) needs positive numbers, "
                                 f"high_freq_factor > low_freq_factor: got {rs!r}")
        if self.head_dim == 0:
            if self.n_embd % self.n_head:
                raise ValueError(f"model config n_embd {self.n_embd} must divide by n_head "
                                 f"{self.n_head}")
            self.head_dim = self.n_embd // self.n_head
        if self.intermediate_size == 0:
            self.intermediate_size = 64 * math.ceil(8 * self.n_embd / 3 / 64)
        if self.n_head % self.n_kv_head:
            raise ValueError(f"model config n_head {self.n_head} must be a multiple of "
                             f"n_kv_head {self.n_kv_head}")
        if self.head_dim % 2:
            raise ValueError(f"model config head_dim {self.head_dim} must be even (rotary "
                             "embeddings rotate pairs)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a model config is a dict of fields, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


# -----------------------------------------------------------------------------
# Rotary position embeddings (Su et al. 2021), with Llama 3.1's frequency scaling

def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies theta^(-2i/d), i < d/2, shape (head_dim/2,), float32.

    With rope_type "llama3" (Llama 3.1): wavelengths longer than original_ctx / low_freq_factor
    are slowed by `factor`, shorter than original_ctx / high_freq_factor are kept, and the band in
    between is interpolated smoothly. Other rope types are refused, never silently ignored.
    """
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = cfg.rope_scaling
    if rs is None or rs.get("rope_type", rs.get("type")) in (None, "default"):
        return inv_freq.float()
    if rs.get("rope_type", rs.get("type")) != "llama3":
        raise ValueError(f"unsupported rope_scaling type {rs.get('rope_type', rs.get('type'))!r} "
                         "(supported: default, llama3)")
    factor = rs["factor"]
    low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old_ctx = rs.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    # long wavelengths (low frequencies) are divided by factor; short ones untouched
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    # the medium band: linear blend between inv_freq/factor and inv_freq in old_ctx/wavelen
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled).float()


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos, sin of shape (B, T, head_dim) for integer positions (B, T).

    Angles are computed in float32 (positions up to 128k lose precision in bf16), then cast.
    """
    angles = positions.float()[..., None] * inv_freq[None, None, :]  # (B, T, head_dim/2)
    emb = torch.cat((angles, angles), dim=-1)                          # (B, T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by the angles in cos/sin (B, T, D): the 'rotate half' form.

    Pairs (x_i, x_{i+D/2}) rotate as complex numbers: (a + ib) e^{i theta}.
    """
    cos, sin = cos[:, None], sin[:, None]                              # (B, 1, T, D)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


# -----------------------------------------------------------------------------
# The blocks

class RMSNorm(nn.Module):
    """x / rms(x) * weight (Zhang & Sennrich 2019); computed in float32 like the reference."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class KVCache:
    """Static key/value buffers for the sampler: k[l], v[l] of shape (B, n_kv_head, max_len, D),
    one pair per layer.

    Memory: 2 * n_layer * B * n_kv_head * max_len * head_dim * bytes_per_element, allocated once.
    One buffer per layer rather than slices of one (n_layer, ...) tensor: torch.compile writes a
    slot of a whole input in place, but a write into a slice of a shared input makes it copy the
    whole buffer back every step (measured: the compiled decode step was 3x slower than eager).
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device, dtype):
        shape = (batch_size, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def repeat_rows(self, n: int) -> "KVCache":
        """A new cache with each row repeated n times in place (row i -> rows i*n .. i*n+n-1):
        a prompt's prefilled keys/values copied to its n samples."""
        out = KVCache.__new__(KVCache)
        out.k = [k.repeat_interleave(n, dim=0) for k in self.k]
        out.v = [v.repeat_interleave(n, dim=0) for v in self.v]
        return out

    def select_rows(self, idx: torch.Tensor) -> "KVCache":
        """A new cache holding rows idx (B',) of this one, in that order: the sampler compacting
        its decode batch as rows finish. Copies every slot (2 * n_layer * B' * n_kv_head *
        max_len * head_dim elements), a few times per generation at most."""
        out = KVCache.__new__(KVCache)
        out.k = [k.index_select(0, idx) for k in self.k]
        out.v = [v.index_select(0, idx) for v in self.v]
        return out


# Masked grouped-query attention on CUDA. SDPA's fused kernels there (aten/src/ATen/native/
# transformers/cuda/sdp_utils.cpp): flash takes enable_gqa but no attn_mask; memory-efficient takes
# a mask but, up to torch 2.13 at least, not enable_gqa (2.13's meta kernel for its backward still
# gives grad_k the query's head count; pytorch PR 191085, July 2026, adds GQA to it). So a mask
# with enable_gqa fell to the math kernel, which materialises (B, H, T, S) scores. The sampler's
# prefill and every decode step pass a mask; the packed form suits cuDNN's kernel too.
# On CPU, SDPA's flash kernel takes both, and sdpa_gqa_masked is no faster (a SmolLM2 decode
# layer, batch 32, 320 slots, bf16: 2.07 ms enable_gqa, 2.13 ms packed, 3.46 ms with k/v repeated
# to H heads) and differs in the last bit in float32: CPU keeps enable_gqa, as it was.
PACKED_GQA_DEVICES = ("cuda",)


def sdpa_gqa_masked(q, k, v, attn_mask):
    """Masked attention with grouped kv heads, as plain (Hq == Hkv) attention, which every fused
    SDPA kernel that takes a mask accepts. q (B, H, T, D), k and v (B, Hkv, S, D), attn_mask
    (B, 1, T, S) or (B, 1, 1, S) bool -> (B, H, T, D).

    Query head h reads kv head h // G (G = H / Hkv, as in enable_gqa) and query rows are
    independent, so a kv head's G query heads stack on the query axis: (B, Hkv, G * T, D), row
    g * T + t, the mask's rows repeated G times to match. k and v are not copied (repeating them
    to H heads would write G times the cache read at every decode step); at a decode step (T = 1)
    q's reshape is a view and the (B, 1, 1, S) mask broadcasts as it is.
    """
    B, H, T, D = q.shape
    G = H // k.size(1)
    assert attn_mask.size(1) == 1, "one mask for all heads: (B, 1, T, S)"
    q = q.reshape(B, k.size(1), G * T, D)                              # (B, Hkv, G*T, D)
    if attn_mask.size(-2) > 1:
        attn_mask = attn_mask.repeat(1, 1, G, 1)                       # (B, 1, G*T, S)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, Hkv, G*T, D)
    return y.reshape(B, H, T, D)


# -----------------------------------------------------------------------------
# LoRA (Hu et al. 2021): train a low-rank update of frozen weights, W + (alpha / r) B A

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Linear(nn.Linear):
    """nn.Linear that add_lora can give a low-rank adapter (the blocks' projections are these):

        y = x W^T + b + scale * (x A^T) B^T,     A (r, in), B (out, r), scale = alpha / r

    Without one (lora_A is None, the default) it is nn.Linear, with the same state dict. B starts
    at zero, so a fresh adapter adds exactly 0.0: the logits are the base's bit for bit. With
    lora_off (lora_disabled) the base runs alone: the frozen reference policy of RL.
    No dropout on the adapter's input (PEFT's lora_dropout): RL needs the training forward's
    log-probs to be those of the policy that sampled.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_parameter("lora_A", None)   # None: not in the state dict or parameters()
        self.register_parameter("lora_B", None)
        self.lora_scale, self.lora_off = 0.0, False

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.lora_A is None or self.lora_off:
            return y
        # the adapters are float32 masters; a bf16 base without autocast (the sampler) runs them
        # in its dtype. (B, T, in) -> (B, T, r) -> (B, T, out)
        a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        return y + F.linear(F.linear(x, a), b) * self.lora_scale


def is_lora_key(name: str) -> bool:
    """A state-dict key of an adapter (what a LoRA checkpoint saves)."""
    return name.endswith((".lora_A", ".lora_B"))


def add_lora(model: "GPT", rank: int, alpha: float, targets=LORA_TARGETS) -> "GPT":
    """Freeze every weight of `model` and give each block's `targets` projections an adapter,
    in place. A gets nn.Linear's own init (kaiming-uniform, as PEFT), B zeros. The adapters are
    float32 (float64 in a float64 model) whatever the frozen weights' dtype: they are what
    AdamW updates. model.lora records (rank, alpha, targets); ValueError for a bad setting."""
    bad = sorted(set(targets) - set(LORA_TARGETS))
    if rank < 1 or not alpha > 0 or not targets or bad or len(set(targets)) != len(targets):
        raise ValueError(f"LoRA needs rank >= 1, alpha > 0 and targets from "
                         f"{', '.join(LORA_TARGETS)} (got rank {rank}, alpha {alpha}, "
                         f"targets {list(targets)})")
    if getattr(model, "lora", None) is not None:
        raise ValueError("the model already has LoRA adapters (merge_lora first)")
    model.requires_grad_(False)
    for name, m in model.named_modules():
        if isinstance(m, Linear) and name.rsplit(".", 1)[-1] in targets:
            kw = dict(device=m.weight.device, dtype=torch.promote_types(m.weight.dtype, torch.float32))
            m.lora_A = nn.Parameter(torch.empty(rank, m.in_features, **kw))
            nn.init.kaiming_uniform_(m.lora_A, a=math.sqrt(5))
            m.lora_B = nn.Parameter(torch.zeros(m.out_features, rank, **kw))
            m.lora_scale = alpha / rank
    model.lora = dict(rank=rank, alpha=float(alpha), targets=list(targets))
    return model


def lora_merged(w, a, b, scale: float, dtype=None) -> torch.Tensor:
    """W + scale * B @ A, summed in float32 (float64 for a float64 W), returned in `dtype`
    (default W's): rounded once, after the update is added."""
    dt = torch.promote_types(w.dtype, torch.float32)
    return (w.to(dt) + scale * (b.to(dt) @ a.to(dt))).to(dtype or w.dtype)


@torch.no_grad()
def merge_lora(model: "GPT") -> "GPT":
    """Fold every adapter into its weight and drop it, in place: a plain GPT with the LoRA
    model's function (its logits up to rounding), whose state dict is a base model's."""
    for m in model.modules():
        if isinstance(m, Linear) and m.lora_A is not None:
            m.weight.copy_(lora_merged(m.weight, m.lora_A, m.lora_B, m.lora_scale))
            m.lora_A = m.lora_B = None
    model.lora = None
    return model


@contextlib.contextmanager
def lora_disabled(model: nn.Module):
    """Run `model` (a LoRA GPT, or any module holding one: WithValues, DDP, FSDP) with every
    adapter switched off: the frozen base alone, which is RL's reference policy. No copy of any
    weight is made. A model without adapters is an error (its 'reference' would be the policy)."""
    ms = [m for m in model.modules() if isinstance(m, Linear) and m.lora_A is not None]
    if not ms:
        raise ValueError("lora_disabled: the model has no LoRA adapters")
    for m in ms:
        m.lora_off = True
    try:
        yield model
    finally:
        for m in ms:
            m.lora_off = False


# -----------------------------------------------------------------------------
# Attention and the MLP

class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, kv_cache=None, cache_index=None, attn_mask=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)     # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            # write this call's keys/values into their slots, then attend over the whole buffer;
            # attn_mask hides empty and padded slots. (B, Hkv, S, D) with S = max_len
            kc, vc = kv_cache.k[self.layer_idx], kv_cache.v[self.layer_idx]
            kc.index_copy_(2, cache_index, k.to(kc.dtype))
            vc.index_copy_(2, cache_index, v.to(vc.dtype))
            # attend over the first S' = attn_mask.size(-1) slots only: the sampler passes a mask
            # as long as the filled part of the cache (rounded up to a bucket), so a decode step
            # reads S' slots of every layer's cache, not all max_len of them
            n = attn_mask.size(-1) if attn_mask is not None else kc.size(2)
            k, v = kc[:, :, :n].to(q.dtype), vc[:, :, :n].to(q.dtype)
        gqa = self.n_kv_head != self.n_head
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif gqa and q.device.type in PACKED_GQA_DEVICES:
            y = sdpa_gqa_masked(q, k, v, attn_mask)      # keeps CUDA's fused kernels (see above)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)              # (B, T, H*D)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.rms_norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, kv_cache=None, cache_index=None, attn_mask=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, kv_cache, cache_index, attn_mask)
        x = x + self.mlp(self.mlp_norm(x))
        return x


# -----------------------------------------------------------------------------
# The model

class Packed(NamedTuple):
    """Rows that hold several sequences each, end to end (the RL update's packed rows, as SFT's
    packing): positions (B, T) restart at 0 for each sequence, attn_mask (B, 1, T, S) bool is
    causal within a sequence and False across them, so each one is computed as if alone;
    at (b, Tn) long: which of the flattened B * T positions to compute logits at. Passed as
    GPT.forward's logits_at, so any wrapper that forwards logits_at carries it."""
    positions: torch.Tensor
    attn_mask: torch.Tensor
    at: torch.Tensor


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.act_ckpt = False  # set True to recompute blocks in backward (--act_ckpt)
        self.lora = None       # add_lora's settings once the blocks have adapters
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # non-persistent: derived from the config, so never part of a checkpoint
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init: residual output projections shrink with depth so the residual
        # stream's variance does not grow with n_layer
        for name, p in self.named_parameters():
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _apply(self, fn, recurse=True):
        """Every conversion (.to, .cuda, .bfloat16, .half, to_empty ...) goes through here. It
        casts every floating buffer, and inv_freq in bf16 is off by up to 2^-9 relative: an angle
        error of distance * that, which grows along a sequence (measured: a bf16 rollout copy of
        SmolLM2 had 28% more log-prob error at positions 3000-6000 than at 0-1000, 9% with
        float32 frequencies). So after any conversion inv_freq is recomputed from the config,
        float32, on the device the conversion chose. Not the alternatives: casting it back to
        float32 keeps the bf16 rounding; recomputing it in every forward costs ops (and a
        host-to-device copy) per decode step; a plain attribute would not follow .to(device).
        """
        super()._apply(fn, recurse)
        self.inv_freq = rope_inv_freq(self.config).to(self.inv_freq.device)
        return self

    def forward(self, idx, positions=None, kv_cache=None, cache_index=None, attn_mask=None,
                return_hidden=False, logits_at=None):
        """idx (B, T) -> logits (B, T, vocab_size), float32 (the loss and log-probs want it).

        positions (B, T) default to 0..T-1. With kv_cache, cache_index (T,) is required.
        return_hidden: also return the final normed hidden states (B, T, C), float32 like the
        logits whatever the weights' dtype (PPO's value head).
        logits_at (B, Tn) long: logits (and hidden states) at these positions only, (B, Tn, V);
        or a Packed layout (several sequences per row of idx): its positions and attn_mask, and
        the logits at its `at` (b, Tn) indices into the flattened (B * T) positions, (b, Tn, V).
        """
        if isinstance(logits_at, Packed):
            positions, attn_mask, flat_at = logits_at.positions, logits_at.attn_mask, logits_at.at
            logits_at = None
        else:
            flat_at = None
        B, T = idx.shape
        if positions is None:
            positions = torch.arange(T, device=idx.device).expand(B, T)
        if kv_cache is not None and cache_index is None:
            raise ValueError("kv_cache needs cache_index (the slots to write)")
        x = self.embed_tokens(idx)                                        # (B, T, C)
        cos, sin = rope_cos_sin(positions, self.inv_freq, x.dtype)        # (B, T, D)
        for block in self.layers:
            if self.act_ckpt and self.training and torch.is_grad_enabled():
                # activation checkpointing: keep only each block's input, recompute the block in
                # backward (~1/3 more compute for O(n_layer) less activation memory)
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, None, None, attn_mask,
                                                      use_reentrant=False)
            else:
                x = block(x, cos, sin, kv_cache, cache_index, attn_mask)
        if logits_at is not None:
            x = x.gather(1, logits_at[..., None].expand(-1, -1, x.size(-1)))  # (B, Tn, C)
        elif flat_at is not None:
            x = x.flatten(0, 1)[flat_at]                                  # (b, Tn, C)
        # the final norm and the LM head in float32 whatever the weights' dtype (see _logits);
        # RMSNorm of a float32 input multiplies by its (exactly upcast) weight in float32
        x = self.norm(x.double() if x.dtype == torch.float64 else x.float())   # (B, T, C) >= fp32
        logits = self._logits(x)                                          # (B, T, vocab) float32
        return (logits, x) if return_hidden else logits

    HEAD_CHUNK = 4096  # rows of a bf16 LM head cast to float32 at a time (see _logits)

    def _logits(self, x):
        """The LM head: x (B, T, C) float32 -> logits (B, T, V) float32, from float32 products
        and sums, under bf16 autocast (float32 master weights: training) and with bf16 weights
        (the sampler's rollout copy) alike.

        Every log-prob (the sampler's, the RL loss's) comes from these logits. In bf16 they are
        spaced 0.125 at |logit| 20: ~1e-2 of noise in a log-prob over a 49k-152k vocabulary.
        Autocast is switched off for the head; bf16 weights are cast to float32 (exactly) a chunk
        of HEAD_CHUNK rows at a time. Why chunks: torch 2.13 has no bf16 matmul with a float32
        output on CPU (torch.mm's out_dtype is CUDA-only), and casting the whole (V, C) weight
        writes V * C * 4 fresh bytes every decode step. A decode step of a bf16 SmolLM2-shaped
        model (batch 32, one CPU thread) took 112 ms with the head in bf16 (bf16-rounded
        logits), 182 ms casting the whole weight, 134 ms in chunks of 4096 rows (2048: 135, 8192:
        139) and 130 ms with a kept float32 copy (4 more bytes per head weight, to keep in sync).
        Footguns: with bf16 weights the backward keeps the float32 chunks (4 * V * C bytes) until
        it runs; on CUDA the head is a float32 matmul, not a bf16 tensor-core one.
        """
        w = self.lm_head.weight                                           # (V, C)
        with torch.autocast(x.device.type, enabled=False):
            if w.dtype in (torch.float32, torch.float64):   # a float64 model stays float64
                return F.linear(x.to(w.dtype), w)
            return torch.cat([F.linear(x, c.float()) for c in w.split(self.HEAD_CHUNK)], dim=-1)

    # -- bookkeeping ------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights are counted once
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 N (forward + backward, Kaplan et al. 2020) with N the
        weight matrices' parameters (every nn.Linear, the LM head included even when it is tied
        to the embedding, whose lookup is no matmul), plus attention's 12 * n_layer * n_head *
        head_dim * seq_len (PaLM appendix B: QK^T and AV at full context, forward + backward).
        Forward only is a third of it."""
        c = self.config
        n = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6 * n + 12 * c.n_layer * c.n_head * c.head_dim * seq_len

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: weight decay on matrices (linear and embedding weights) only;
        norms' gains and biases are not decayed (decaying a gain toward 0 fights the norm)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad}  # dedupe tied weights
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        return [dict(params=decay, weight_decay=weight_decay),
                dict(params=no_decay, weight_decay=0.0)]
