"""
GPU memory budget of a training stage, per GPU, from the model config: a formula, not a guess.

    python -m nanorlsp.tooling.memory qwen2.5-7b --gpus 8 --fsdp       # a preset (see PRESETS)
    python -m nanorlsp.tooling.memory path/to/Qwen2.5-1.5B              # a HF dir (its config.json)
    python -m nanorlsp.tooling.memory out/sft --stage sft               # a nanorlsp run (its ckpt.pt)
    python -m nanorlsp.tooling.memory --table [--lora_rank 16]          # the markdown table (LoRA's)
    from nanorlsp.tooling.memory import budget
    b = budget(cfg, gpus=8, fsdp=True)        # {"weights": bytes, ..., "total": bytes}

total = always + max(train, rollout), the two phases of an RL step never overlapping; P
parameters, /N where FSDP shards a state over N GPUs (DDP replicates it):
    always   fp32 weights 4P/N, grads 4P/N, AdamW moments 8P/N; for rl the frozen reference
    train    compute weights + activations (act_bytes: per token per layer, checked against
             autograd by tests/test_memory.py) + LOGIT_COPIES of the (B, T, V) fp32 logits
    rollout  (rl) the sampling copy (if any) + its KV cache + the prefill's logits
Every term, LoRA's, and what is not counted: docs/real_weights.md.
Footguns: batch sizes are per GPU (more GPUs = a bigger global batch, not less activation memory
per GPU); for big vocabularies (Qwen: 152k) the fp32 logits outweigh everything else: mind
--micro_batch x --seq_len. A budget "fits" under FITS_FRACTION (90%) of a card.
"""
import argparse
import inspect
import json
import math
import os

from nanorlsp.model import LORA_TARGETS, ModelConfig

GIB = 2 ** 30
GPU_SIZES = (24, 40, 48, 80)  # GiB of common cards (RTX 4090 / A100-40 / L40S, A6000 / A100-80, H100)
FITS_FRACTION = 0.9          # headroom for what is not counted (docs/real_weights.md)
LOGIT_COPIES = {"sft": 4, "rl": 5}  # fp32 (B, T, V) tensors alive at the start of backward:
# sft: the logits, log_softmax's saved output, its gradient and the gradient of the logits
# (sft_loss_sum); rl adds the reference's logits of the same rows, held through the update

# Published config.json values, https://huggingface.co/<name>/blob/main/config.json (checked
# against copies of those files: Qwen2.5-0.5B and -1.5B(-Instruct) mirrors on the hub, the
# Qwen2.5-7B and Llama-3.1-8B configs in citsjtu2020/LLM-Prof sglang/Model_Config.md).
# Only the keys that size the model; config_from_hf fills the rest.
PRESETS = {
    "qwen2.5-0.5b": dict(architectures=["Qwen2ForCausalLM"], hidden_size=896,
                         intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0),
    "qwen2.5-1.5b": dict(architectures=["Qwen2ForCausalLM"], hidden_size=1536,
                         intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0),
    "qwen2.5-7b": dict(architectures=["Qwen2ForCausalLM"], hidden_size=3584,
                       intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                       max_position_embeddings=131072, rope_theta=1000000.0),
    # meta-llama/Llama-3.2-1B (checked against a verbatim copy of its config.json)
    "llama-3.2-1b": dict(architectures=["LlamaForCausalLM"], hidden_size=2048,
                         intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         tie_word_embeddings=True, max_position_embeddings=131072,
                         rope_theta=500000.0, rms_norm_eps=1e-5,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
    "llama-3.1-8b": dict(architectures=["LlamaForCausalLM"], hidden_size=4096,
                         intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                         max_position_embeddings=131072, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
}


# -----------------------------------------------------------------------------
# the model: config and exact sizes

def load_config(model: str) -> ModelConfig:
    """A preset name, a HF config.json (or its dir), or a nanorlsp run (dir or ckpt.pt).
    ValueError with one line for anything else."""
    from nanorlsp.checkpoint import CKPT_NAME, CheckpointError, read_checkpoint
    from nanorlsp.tooling.hf import config_from_hf  # the loader's own mapping: one map, no drift
    try:
        if model.lower() in PRESETS:
            return config_from_hf(PRESETS[model.lower()], where=model)
        if model.endswith(".pt") or os.path.isfile(os.path.join(model, CKPT_NAME)):
            return ModelConfig.from_dict(dict(read_checkpoint(model)["model_config"]))
        path = os.path.join(model, "config.json") if os.path.isdir(model) else model
        if not os.path.isfile(path):
            raise ValueError(f"{model!r} is not a preset ({', '.join(PRESETS)}), a config.json, "
                             "a Hugging Face model dir or a nanorlsp checkpoint")
        try:
            hf = json.load(open(path))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not readable JSON ({e})") from None
        return config_from_hf(hf, where=path)
    except (CheckpointError, TypeError, AssertionError) as e:
        raise ValueError(str(e)) from None


def block_params(c: ModelConfig) -> int:
    """One transformer block: q/k/v/o (+ q/k/v biases), SwiGLU gate/up/down, two RMSNorm gains."""
    q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    attn = c.n_embd * (q + 2 * kv) + q * c.n_embd + (q + 2 * kv if c.qkv_bias else 0)
    return attn + 3 * c.n_embd * c.intermediate_size + 2 * c.n_embd


def num_params(c: ModelConfig) -> int:
    """Exactly GPT(c).num_params(): embedding, blocks, final norm, lm_head unless tied."""
    emb = c.vocab_size * c.n_embd
    return emb + c.n_layer * block_params(c) + c.n_embd + (0 if c.tie_embeddings else emb)


def lora_params(c: ModelConfig, rank: int, targets=LORA_TARGETS) -> int:
    """Exactly the parameters add_lora(GPT(c), rank, ...) adds: rank * (in + out) per target."""
    q, kv, C, ffn = c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_embd, c.intermediate_size
    shape = dict(q_proj=(C, q), k_proj=(C, kv), v_proj=(C, kv), o_proj=(q, C),
                 gate_proj=(C, ffn), up_proj=(C, ffn), down_proj=(ffn, C))
    return c.n_layer * sum(rank * sum(shape[t]) for t in targets)


def norm_bytes(c: ModelConfig, mode: str, consumers: int, lora: bool = False,
               adapted: int = 0) -> int:
    """Bytes an RMSNorm and the linears reading it save per token: its fp32 input (the residual
    under autocast, else x.float()) and rsqrt, then the normalized x and the output. Under
    autocast both are fp32 and each consuming linear saves its own bf16 cast of the output.
    LoRA (frozen gain and linears): no normalized x, and the output only for the `adapted` of
    the consumers (their adapters read it; a frozen linear needs no input for its backward)."""
    C, b = c.n_embd, (4 if mode == "fp32" else 2)
    if lora:
        out = 2 * C * adapted if mode == "autocast" else b * C * (adapted > 0)
        return 4 * C + 4 + out
    if mode == "autocast":
        return 4 * C + 4 + 4 * C + 2 * C * consumers
    return 4 * C + 4 + b * C + b * C


def act_bytes(c: ModelConfig, mode: str, lora_rank: int = 0, lora_targets=LORA_TARGETS) -> int:
    """Bytes autograd saves per token for one block. mode: "autocast" (fp32 weights, bf16
    autocast: DDP), "bf16" (bf16 weights: FSDP's param_dtype, or a LoRA base frozen in bf16)
    or "fp32". lora_rank > 0: the block's weights frozen, adapters on lora_targets."""
    q, kv, b = c.n_head * c.head_dim, c.n_kv_head * c.head_dim, (4 if mode == "fp32" else 2)
    I, lora = c.intermediate_size, lora_rank > 0
    n = lambda *ts: sum(t in lora_targets for t in ts) if lora else 0  # noqa: E731 (adapted)
    # q, k (after RoPE), v, the attention output; SDPA's logsumexp (B, n_head, T) in fp32
    attn = norm_bytes(c, mode, 3, lora, n("q_proj", "k_proj", "v_proj")) + b * (
        2 * q + 2 * kv) + 4 * c.n_head
    # gate, up, silu(gate), and their product (down_proj's input: a LoRA block keeps it for
    # down_proj's adapter only)
    mlp = norm_bytes(c, mode, 2, lora, n("gate_proj", "up_proj")) + b * 3 * I + (
        b * I if not lora or n("down_proj") else 0)
    # each adapter's (B, T, rank) intermediate, x A^T
    return attn + mlp + b * lora_rank * n(*LORA_TARGETS)


# -----------------------------------------------------------------------------
# the budget

TRAIN = ("compute weights", "activations", "logits")
ROLLOUT = ("rollout policy", "kv cache", "prefill logits")


def budget(cfg, gpus=1, fsdp=False, stage="rl", micro_batch=8, seq_len=1024, rollout_batch=64,
           prompt_len=256, n_samples=8, act_ckpt=True, dtype="bf16",
           frozen_dtype="bf16", lora_rank=0, lora_targets=LORA_TARGETS) -> dict[str, float]:
    """Bytes per GPU by component, plus "total" (always + max(train, rollout)).
    cfg: a ModelConfig or a HF config.json dict. Batch sizes are rows per GPU; seq_len is prompt +
    completion (the training sequence and the rollout cache length S). lora_rank > 0: LoRA
    (the base frozen in frozen_dtype, fp32 adapters on lora_targets; see the docstring)."""
    from nanorlsp.tooling.hf import config_from_hf
    c = cfg if isinstance(cfg, ModelConfig) else config_from_hf(cfg, where="config dict")
    assert stage in ("sft", "rl") and {dtype, frozen_dtype} <= {"bf16", "fp32"}
    nbytes = {"bf16": 2, "fp32": 4}
    P, b, f, n = num_params(c), nbytes[dtype], nbytes[frozen_dtype], (gpus if fsdp else 1)
    rl, lora = stage == "rl", lora_rank > 0
    if lora:  # the frozen base + fp32 adapters (grads, AdamW); the reference is the base itself
        L = lora_params(c, lora_rank, lora_targets)
        out = {"weights": (f * P + 4 * L) / n, "grads": 4 * L / n, "optimizer": 8 * L / n,
               "reference": 0.0}
    else:
        L = 0
        out = {"weights": 4 * P / n, "grads": 4 * P / n, "optimizer": 8 * P / n,
               "reference": f * P / n if rl else 0.0}
    # -- train phase
    if fsdp:  # the root group (all but the blocks) + its grads, two gathered blocks + one grad
        root, blk, blk_lora = P - c.n_layer * block_params(c), block_params(c), L // c.n_layer
        out["compute weights"] = (b * (root + 2 * (blk + blk_lora) + blk_lora) if lora else
                                  b * (2 * root + 3 * blk))   # LoRA: a frozen root, no grads
    elif lora:  # autocast casts the adapters, and an fp32 base (a bf16 base needs no cast)
        out["compute weights"] = (2 * L + (2 * P if f == 4 else 0)) if b == 2 else 0.0
    else:     # autocast's bf16 cast of every weight (none in fp32)
        out["compute weights"] = 2 * P if b == 2 else 0.0
    if lora:  # the weights the blocks compute with: the base's dtype (FSDP's: bf16 on CUDA)
        mode = "fp32" if b == 4 else ("bf16" if fsdp or f == 2 else "autocast")
    else:
        mode = "fp32" if b == 4 else ("bf16" if fsdp else "autocast")
    layer, tokens = act_bytes(c, mode, lora_rank, lora_targets), micro_batch * seq_len
    resid = 4 if mode != "bf16" else 2    # the residual stream is fp32 under autocast
    # float32 in every mode: the LM head runs in float32 on the log-prob path (GPT._logits);
    # + the int64 ids (embedding)
    final_norm = norm_bytes(c, "fp32", 1) + 8
    if lora:
        # the final norm keeps its fp32 input and rsqrt (4C + 4: the gain and the head are
        # frozen, and a frozen embedding keeps no ids), exactly what the first block's norm does
        # not keep (its input, the embedding's output, needs no gradient): they cancel
        final_norm = 0
    per_token = (c.n_layer * resid * c.n_embd + layer) if act_ckpt else c.n_layer * layer
    out["activations"] = tokens * (per_token + final_norm)
    out["logits"] = LOGIT_COPIES[stage] * tokens * c.vocab_size * 4
    # -- rollout phase (rl): the sampling copy, the KV cache, the prefill's logits
    prompts = math.ceil(rollout_batch / n_samples)
    # a copy in the frozen dtype samples (gathered under FSDP); fp32 DDP samples with the policy,
    # and so does a LoRA policy without FSDP (its base is in the frozen dtype)
    copy = fsdp or (f != 4 and not lora)
    kv = f if copy or lora else 4
    out["rollout policy"] = f * P if rl and copy else 0.0
    out["kv cache"] = (2 * c.n_layer * (rollout_batch + prompts) * c.n_kv_head * seq_len
                       * c.head_dim * kv) if rl else 0.0
    # the prefill's LM head at the last prompt position only (sampler: logits_at), float32
    # (GPT._logits; with bf16 weights its chunks and their concatenation), repeated to B rows
    out["prefill logits"] = ((prompts * (2 if kv == 2 else 1) + rollout_batch) * c.vocab_size * 4
                             if rl else 0.0)
    always = sum(v for k, v in out.items() if k not in TRAIN + ROLLOUT)
    out["total"] = always + max(sum(out[k] for k in TRAIN), sum(out[k] for k in ROLLOUT))
    return {k: float(v) for k, v in out.items()}


# budget()'s settings and their defaults, shared by table() and the CLI
DEFAULTS = {k: p.default for k, p in inspect.signature(budget).parameters.items()
            if p.default is not p.empty and k not in ("gpus", "fsdp")}
# the LoRA table (--table --lora_rank R): the 7-8B presets on one GPU, at these per-GPU batches
LORA_MODELS = ("qwen2.5-7b", "llama-3.1-8b")
LORA_SETTINGS = (dict(micro_batch=1, seq_len=1024, rollout_batch=16),
                 dict(micro_batch=2, seq_len=2048, rollout_batch=32),
                 dict(micro_batch=8, seq_len=1024, rollout_batch=64))


def fits(total: float) -> list[int]:
    return [g for g in GPU_SIZES if total <= FITS_FRACTION * g * GIB]


# -----------------------------------------------------------------------------
# output

def report(name: str, c: ModelConfig, b: dict, args) -> str:
    par = "FSDP (FULL_SHARD)" if args.fsdp else "DDP (replicated)"
    lines = [f"{name}: {num_params(c) / 1e9:.3f}B params ({c.arch}, {c.n_layer} layers, "
             f"n_embd {c.n_embd}, vocab {c.vocab_size}{', tied' if c.tie_embeddings else ''})",
             f"stage {args.stage}, {args.gpus} GPU(s), {par}, compute {args.dtype}, frozen "
             f"{args.frozen_dtype}, micro_batch "
             f"{args.micro_batch} x seq_len {args.seq_len}, act_ckpt {args.act_ckpt}"
             + (f", rollouts {args.rollout_batch} rows (prompt {args.prompt_len})"
                if args.stage == "rl" else "")
             + (f", LoRA rank {args.lora_rank} on {','.join(args.lora_targets)} "
                f"({lora_params(c, args.lora_rank, args.lora_targets) / 1e6:.1f}M trainable)"
                if args.lora_rank else ""), "", f"{'component':<18}{'phase':<9}{'GiB/GPU':>9}"]
    for k, v in b.items():
        if k != "total" and v:
            phase = "train" if k in TRAIN else "rollout" if k in ROLLOUT else "always"
            lines.append(f"{k:<18}{phase:<9}{v / GIB:>9.2f}")
    ok = fits(b["total"])
    lines += [f"{'total':<27}{b['total'] / GIB:>9.2f}   (always + max(train, rollout))",
              "fits: " + ", ".join(f"{g} GiB {'yes' if g in ok else 'no'}" for g in GPU_SIZES)
              + f" (at {FITS_FRACTION:.0%} of the card)"]
    return "\n".join(lines)


def table(**kw) -> str:
    """The README's table: every preset x {1, 8} GPUs x {DDP, FSDP}, with budget()'s settings
    (the CLI passes its flags; the defaults are budget()'s: stage rl, bf16, act_ckpt, ...)."""
    g = lambda b, *ks: f"{sum(b[k] for k in ks) / GIB:.1f}"  # noqa: E731
    k = {**DEFAULTS, **kw}
    rows = [f"GiB per GPU; stage {k['stage']}, compute {k['dtype']}, reference / rollout copy / KV "
            f"cache {k['frozen_dtype']}, micro_batch {k['micro_batch']} rows x "
            f"seq_len {k['seq_len']} per GPU, activation checkpointing "
            f"{'on' if k['act_ckpt'] else 'off'}"
            + (f", rollouts {k['rollout_batch']} rows per GPU ({k['n_samples']} samples per "
               f"prompt, prompt_len {k['prompt_len']})" if k["stage"] == "rl" else "")
            + f"; fits = the smallest of {'/'.join(map(str, GPU_SIZES))} GiB with the total under "
            f"{FITS_FRACTION:.0%}", "",
            "| model | params | GPUs | sharding | weights+grads+AdamW | reference | "
            "train: compute weights+activations+logits | rollout: policy+KV+prefill | "
            "total GiB/GPU | fits |", "|" + "---|" * 10]
    for name in PRESETS:
        c = load_config(name)
        for gpus, fsdp in ((1, False), (8, False), (8, True)):  # FSDP needs > 1 rank
            b = budget(c, gpus=gpus, fsdp=fsdp, **k)
            ok = fits(b["total"])
            rows.append(f"| {name} | {num_params(c) / 1e9:.2f}B | {gpus} | "
                        f"{'FSDP' if fsdp else 'DDP'} | {g(b, 'weights', 'grads', 'optimizer')} | "
                        f"{g(b, 'reference')} | {g(b, *TRAIN)} | {g(b, *ROLLOUT)} | "
                        f"{g(b, 'total')} | {f'{ok[0]} GiB' if ok else 'none'} |")
    return "\n".join(rows)


def lora_table(**kw) -> str:
    """The LoRA table: LORA_MODELS on one GPU at each of LORA_SETTINGS (rows per GPU), with
    budget()'s other settings (the CLI's flags; lora_rank is required)."""
    g = lambda b, *ks: f"{sum(b[k] for k in ks) / GIB:.1f}"  # noqa: E731
    k = {**DEFAULTS, **kw}
    assert k["lora_rank"] > 0
    rows = [f"GiB on one GPU; stage {k['stage']}, LoRA rank {k['lora_rank']} on "
            f"{','.join(k['lora_targets'])}, compute {k['dtype']}, frozen base / KV cache "
            f"{k['frozen_dtype']}, activation checkpointing {'on' if k['act_ckpt'] else 'off'}"
            + (f", {k['n_samples']} samples per prompt, prompt_len {k['prompt_len']}"
               if k["stage"] == "rl" else "")
            + f"; a card fits when the total is under {FITS_FRACTION:.0%} of it", "",
            "| model | LoRA params | micro_batch x seq_len | rollout rows | frozen base | "
            "adapters+grads+AdamW | train: compute weights+activations+logits | "
            "rollout: policy+KV+prefill | total GiB | "
            + " | ".join(f"{s} GiB" for s in GPU_SIZES) + " |",
            "|" + "---|" * (9 + len(GPU_SIZES))]
    for name in LORA_MODELS:
        c = load_config(name)
        L = lora_params(c, k["lora_rank"], k["lora_targets"])
        for setting in LORA_SETTINGS:
            b = budget(c, **{**k, **setting})
            base = num_params(c) * (2 if k["frozen_dtype"] == "bf16" else 4)
            ok = fits(b["total"])
            rows.append(f"| {name} | {L / 1e6:.1f}M | {setting['micro_batch']} x "
                        f"{setting['seq_len']} | {setting['rollout_batch']} | {base / GIB:.1f} | "
                        f"{(b['weights'] - base + b['grads'] + b['optimizer']) / GIB:.2f} | "
                        f"{g(b, *TRAIN)} | {g(b, *ROLLOUT)} | {g(b, 'total')} | "
                        + " | ".join("yes" if s in ok else "no" for s in GPU_SIZES) + " |")
    return "\n".join(rows)


def main(argv=None):
    from nanorlsp.common import ArgParser, comma_list, die, nonneg_int, positive_int
    ap = ArgParser(prog="python -m nanorlsp.tooling.memory", formatter_class=argparse.
                   ArgumentDefaultsHelpFormatter, description="Per-GPU memory budget of an sft / "
                   "rl stage; what is counted and why: docs/real_weights.md.")
    ap.add_argument("model", nargs="?", help=f"preset ({', '.join(PRESETS)}), HF config.json or "
                    "model dir, or nanorlsp checkpoint dir")
    ap.add_argument("--table", action="store_true", help="print the README table (presets x "
                    "{1, 8} GPUs x {DDP, FSDP}) with these settings")
    ap.add_argument("--gpus", type=positive_int, default=1, help="data-parallel GPUs")
    ap.add_argument("--fsdp", action="store_true", help="FULL_SHARD params/grads/AdamW (else DDP)")
    ap.add_argument("--stage", choices=["sft", "rl"], help="rl: + reference, rollouts")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], help="compute dtype")
    ap.add_argument("--frozen_dtype", choices=["bf16", "fp32"],
                    help="dtype of the reference, the rollout copy and the KV cache")
    ap.add_argument("--micro_batch", type=positive_int, help="training rows per GPU")
    ap.add_argument("--seq_len", type=positive_int, help="prompt + completion tokens")
    ap.add_argument("--rollout_batch", type=positive_int, help="rollout rows per GPU")
    ap.add_argument("--prompt_len", type=positive_int, help="prompt tokens (the prefill)")
    ap.add_argument("--n_samples", type=positive_int, help="rollouts per prompt")
    ap.add_argument("--act_ckpt", action=argparse.BooleanOptionalAction,
                    help="activation checkpointing per block")
    ap.add_argument("--lora_rank", type=nonneg_int, help="LoRA adapters of this rank on a "
                    "frozen base (0: full fine-tuning); with --table: the LoRA table (7-8B on "
                    "one GPU)")
    ap.add_argument("--lora_targets", type=comma_list(LORA_TARGETS),
                    help="the projections with adapters, comma-separated")
    ap.set_defaults(**DEFAULTS)
    args = ap.parse_args(argv)
    kw = {k: getattr(args, k) for k in DEFAULTS}
    if args.table:
        print(lora_table(**kw) if args.lora_rank else table(**kw))
        return
    if args.model is None:
        ap.error("give a MODEL (or --table)")
    try:
        c = load_config(args.model)
    except ValueError as e:
        die(str(e))
    print(report(args.model, c, budget(c, gpus=args.gpus, fsdp=args.fsdp, **kw), args))


if __name__ == "__main__":
    main()
