"""
Decode throughput of the KV-cached sampler against a naive generate and Hugging Face generate,
on the same weights and dtype (float32), greedy, every row generating exactly new_tokens tokens.

    python bench_sampler.py                                  # tiny default model, CPU, ~2 min
    python bench_sampler.py --compile                        # also our sampler with torch.compile
    python bench_sampler.py --config smollm2-shape --batch_sizes 1,8,32 --new_tokens 32

Methods, all timed end to end (prefill included) on the same random prompts:
- ours: nanorlsp.sampler.sample (static KV cache, shape-stable decode step), optionally compiled
- naive: recompute the whole sequence every step (the ground truth of the sampler tests)
- hf: transformers.LlamaForCausalLM.generate (its DynamicCache), weights copied from ours with an
  explicit name map and checked (logits and greedy tokens) before anything is timed

The floor: the time the model's matrix multiplies alone would take at this machine's measured
float32 GEMM rate. FLOPs = 2 * (weight-matrix params, lm_head included) per token processed plus
attention's 4 * n_layer * n_head * head_dim * context; the rate is measured in the same run on a
representative decode GEMM, (B, n_embd) @ (n_embd, intermediate_size), at each batch size,
between the timed runs, best kept. It counts no memory traffic: reading the KV cache every step
(printed under the table) is what a tiny model's decode is really bound by.
Runs are interleaved (ours, naive, hf, ours, ...) and each cell is the median of --repeats;
tokens/s counts generated tokens over the whole call. On a shared CPU, check `uptime` first.

transformers is a benchmark/test-only dependency (requirements-dev.txt), never imported by
nanorlsp itself.
"""
import argparse
import statistics
import time

import torch

from nanorlsp.model import GPT, ModelConfig
from nanorlsp.sampler import sample

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--config", default="tiny", choices=["tiny", "smollm2-shape"],
                    help="tiny: the default SFT model; smollm2-shape: SmolLM2-135M's shape, random")
parser.add_argument("--batch_sizes", default="1,8,32,64", help="comma-separated batch sizes")
parser.add_argument("--prompt_len", type=int, default=16, help="tokens per prompt (all rows)")
parser.add_argument("--new_tokens", type=int, default=128, help="generated tokens per row")
parser.add_argument("--naive_max_batch", type=int, default=64,
                    help="skip the naive generate above this batch size (it is O(T^2))")
parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median)")
parser.add_argument("--compile", action="store_true", help="also time our sampler compiled")
parser.add_argument("--device", default="cpu")
parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

if args.threads:
    torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
device = torch.device(args.device)
batch_sizes = [int(b) for b in args.batch_sizes.split(",")]


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


# -----------------------------------------------------------------------------
# The model: ours, then the same weights in transformers' Llama

CONFIGS = {
    "tiny": ModelConfig(vocab_size=384, n_layer=2, n_head=4, n_kv_head=4, n_embd=128),
    "smollm2-shape": ModelConfig(vocab_size=49152, n_layer=30, n_embd=576, n_head=9, n_kv_head=3,
                                 intermediate_size=1536, rope_theta=100000.0, rms_norm_eps=1e-5,
                                 tie_embeddings=True, max_seq_len=8192),
}
cfg = CONFIGS[args.config]
model = GPT(cfg).to(device).eval()                      # float32, default (random) init

import transformers  # noqa: E402  (benchmark-only dependency)

hf_cfg = transformers.LlamaConfig(
    vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.intermediate_size,
    num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
    num_key_value_heads=cfg.n_kv_head, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
    rope_theta=cfg.rope_theta, max_position_embeddings=max(cfg.max_seq_len, 2048),
    tie_word_embeddings=cfg.tie_embeddings, attention_bias=cfg.qkv_bias, mlp_bias=False,
    hidden_act="silu", bos_token_id=None, eos_token_id=None, pad_token_id=0)
hf = transformers.LlamaForCausalLM(hf_cfg).to(device).eval()

# ours -> HF, every key named; tied lm_head is the embedding in both, so it appears once
name_map = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
if not cfg.tie_embeddings:
    name_map["lm_head.weight"] = "lm_head.weight"
for i in range(cfg.n_layer):
    for p in ("q", "k", "v", "o"):
        name_map[f"layers.{i}.attn.{p}_proj.weight"] = f"model.layers.{i}.self_attn.{p}_proj.weight"
    for p in ("gate", "up", "down"):
        name_map[f"layers.{i}.mlp.{p}_proj.weight"] = f"model.layers.{i}.mlp.{p}_proj.weight"
    name_map[f"layers.{i}.attn_norm.weight"] = f"model.layers.{i}.input_layernorm.weight"
    name_map[f"layers.{i}.mlp_norm.weight"] = f"model.layers.{i}.post_attention_layernorm.weight"
ours_sd = model.state_dict()
hf_sd = hf.state_dict()
if cfg.tie_embeddings:   # state_dict lists a tied weight under both names; compare unique keys
    ours_sd.pop("lm_head.weight")
    hf_sd.pop("lm_head.weight")
    assert hf.lm_head.weight is hf.model.embed_tokens.weight, "HF head is not tied"
assert set(name_map) == set(ours_sd), set(name_map) ^ set(ours_sd)
assert set(name_map.values()) == set(hf_sd), set(name_map.values()) ^ set(hf_sd)
with torch.no_grad():
    for ours_key, hf_key in name_map.items():
        assert ours_sd[ours_key].shape == hf_sd[hf_key].shape, (ours_key, hf_key)
        hf_sd[hf_key].copy_(ours_sd[ours_key])

# parity: logits on a random batch, then greedy tokens of a short generation
with torch.no_grad():
    x = torch.randint(cfg.vocab_size, (2, 24), device=device)
    ours_logits, hf_logits = model(x), hf(x).logits.float()
    err = (ours_logits - hf_logits).abs().max().item()
    assert err < 1e-4, f"logits differ from transformers by {err:.2e}"
    prompt = x[:, :8]
    ours_tok = sample(model, prompt.tolist(), 8, temperature=0).tokens
    hf_tok = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                         max_new_tokens=8, min_new_tokens=8, eos_token_id=None,
                         pad_token_id=0)[:, 8:]
    assert torch.equal(ours_tok, hf_tok), "greedy tokens differ from transformers"
print(f"parity with transformers {transformers.__version__} ({hf.config._attn_implementation} "
      f"attention): max |logit diff| {err:.1e}, greedy tokens identical")


# -----------------------------------------------------------------------------
# The three generators; each returns (B, new_tokens) ids

@torch.no_grad()
def naive_generate(idx, n):
    """Full recompute every step: (B, T) -> (B, T + 1) -> ... ; O(T^2) work per row."""
    for _ in range(n):
        nxt = model(idx)[:, -1, :].argmax(-1, keepdim=True)          # (B, 1)
        idx = torch.cat((idx, nxt), dim=1)
    return idx[:, -n:]


def ours(idx, n, compile=False):
    return sample(model, idx.tolist(), n, temperature=0, compile=compile).tokens


@torch.no_grad()
def hf_generate(idx, n):
    # eos_token_id=None and min_new_tokens=n: no row stops early, every row makes n tokens
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, num_beams=1,
                      max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    return out[:, idx.shape[1]:]


methods = {"ours": ours}
if args.compile:
    methods["ours+compile"] = lambda idx, n: ours(idx, n, compile=True)
methods["naive"] = naive_generate
methods["hf"] = hf_generate


# -----------------------------------------------------------------------------
# The floor: measured GEMM rate and the FLOPs one run needs

def gemm_gflops(m, k, n, min_time=0.3):
    """float32 rate of (m, k) @ (k, n), GFLOP/s, timed over >= min_time seconds."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    for _ in range(10):
        a @ b
    iters, t0 = 0, time.perf_counter()
    while True:
        for _ in range(20):
            a @ b
        iters += 20
        sync()
        dt = time.perf_counter() - t0
        if dt > min_time:
            return 2 * m * k * n * iters / dt / 1e9


def run_flops(B, Lp, n):
    """FLOPs of one greedy run: prefill Lp tokens, then n - 1 decode steps (the last token needs
    no forward), at the context each token actually sees (not our static cache's full length)."""
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attn = 4 * cfg.n_layer * cfg.n_head * cfg.head_dim     # QK^T and AV per token per context
    prefill = Lp * 2 * weights + attn * Lp * (Lp + 1) / 2
    decode = sum(2 * weights + attn * (Lp + t + 1) for t in range(n - 1))
    return B * (prefill + decode)


peak = gemm_gflops(1024, 1024, 1024)
print(f"config {args.config}: {model.num_params() / 1e6:.2f}M params, float32, {device}, "
      f"{torch.get_num_threads()} threads; big GEMM 1024^3: {peak:.0f} GFLOP/s")
print(f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens per row, greedy, "
      f"median of {args.repeats}\n")


# -----------------------------------------------------------------------------
# Timing: interleave the methods, take medians

rows = []
for B in batch_sizes:
    idx = torch.randint(cfg.vocab_size, (B, args.prompt_len), device=device)
    todo = {k: f for k, f in methods.items() if not (k == "naive" and B > args.naive_max_batch)}
    ref = None
    for name, f in todo.items():               # warm up (and compile); all must agree
        out = f(idx, args.new_tokens)
        assert out.shape == (B, args.new_tokens), (name, out.shape)
        if ref is None:
            ref = out
        elif not torch.equal(out, ref):
            print(f"  note: B={B} {name} tokens differ from ours in "
                  f"{(out != ref).any(1).sum().item()}/{B} rows (float ties on random weights)")
    times, rates = {k: [] for k in todo}, []
    for _ in range(args.repeats):
        # the GEMM rate is measured between the runs too, and the best one kept: the floor is
        # what the machine can do, not what it did while busy
        rates.append(gemm_gflops(B, cfg.n_embd, cfg.intermediate_size, min_time=0.2))
        for name, f in todo.items():
            sync()
            t0 = time.perf_counter()
            f(idx, args.new_tokens)
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = max(rates)
    floor_s = run_flops(B, args.prompt_len, args.new_tokens) / (rate * 1e9)
    rows.append((B, rate, floor_s, med))
    print(f"  B={B} done: " + ", ".join(f"{k} {v:.3f}s" for k, v in med.items()), flush=True)

# -----------------------------------------------------------------------------
# The table: tokens/s (generated tokens, prefill included) and time / floor

names = list(methods)
ours_names = [k for k in names if k.startswith("ours")]
head = ["B", "GEMM GFLOP/s", "floor s"] + [f"{k} tok/s" for k in names] + \
       [f"{k} x floor" for k in names] + [f"{k} / hf" for k in ours_names]
lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for B, rate, floor_s, med in rows:
    tps = [f"{B * args.new_tokens / med[k]:.0f}" if k in med else "skipped" for k in names]
    xf = [f"{med[k] / floor_s:.1f}" if k in med else "-" for k in names]
    speedup = [f"{med['hf'] / med[k]:.2f}" for k in ours_names]   # tokens/s ratio
    lines.append("| " + " | ".join([str(B), f"{rate:.0f}", f"{floor_s:.3f}"] + tps + xf +
                                   speedup) + " |")
print()
print("\n".join(lines))
if any(B > args.naive_max_batch for B in batch_sizes):
    print(f"(naive skipped above batch {args.naive_max_batch}: O(T^2) recompute)")
# the floor counts FLOPs only; decode also reads the KV cache every step, which for a tiny
# model is bigger than its weights (ours attends over the whole static cache, masked)
S = args.prompt_len + args.new_tokens
kv_mb = [2 * cfg.n_layer * B * cfg.n_kv_head * S * cfg.head_dim * 4 / 1e6 for B in batch_sizes]
print(f"weights {4 * model.num_params() / 1e6:.1f} MB; ours reads its KV cache each decode step: "
      + ", ".join(f"B={B} {mb:.1f} MB" for B, mb in zip(batch_sizes, kv_mb)))
