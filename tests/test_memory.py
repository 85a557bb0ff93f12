"""nanorlsp.tooling.memory: exact parameter counts, the activation formula against what autograd really
saves, the scaling laws of the budget, the presets against their published sizes, and the CLI;
the same for LoRA (adapter counts, a frozen block's activations, the 7-8B rows on one GPU)."""
import json

import pytest
import torch

from helpers import one_thread  # noqa: F401 (autouse fixture)
from nanorlsp.tooling.memory import (GIB, LORA_MODELS, LORA_SETTINGS, PRESETS, act_bytes, budget, fits,
                             load_config, lora_params, main, num_params)
from nanorlsp.model import GPT, LORA_TARGETS, ModelConfig, add_lora

SMALL = [
    dict(),                                                         # the tiny default
    dict(n_kv_head=2, qkv_bias=True),                               # GQA + Qwen2 biases
    dict(n_kv_head=1, tie_embeddings=True, vocab_size=100),         # MQA, tied
    dict(n_head=2, n_kv_head=1, head_dim=48, intermediate_size=200),  # explicit head_dim
]


@pytest.mark.parametrize("over", SMALL)
def test_num_params_exact(over):
    cfg = ModelConfig(**over)
    model = GPT(cfg)
    assert num_params(cfg) == model.num_params() == sum(
        p.numel() for p in {id(p): p for p in model.parameters()}.values())


def saved_bytes(cfg, mode, B=3, T=20, lora_rank=0, lora_targets=LORA_TARGETS):
    """Bytes of the activations autograd saves in a forward (storages counted once; parameters
    and autocast's weight casts left out: only tensors with a leading B or B*T dim)."""
    torch.manual_seed(0)
    model = GPT(cfg)
    if mode == "bf16":
        model = model.bfloat16()
    if lora_rank:
        add_lora(model, lora_rank, 8, lora_targets)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.dim() and t.shape[0] in (B, B * T) and t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
        model(idx)
    return sum(seen.values())


@pytest.mark.parametrize("mode", ["autocast", "bf16", "fp32"])
@pytest.mark.parametrize("over", SMALL[1:])
def test_act_bytes_match_autograd(mode, over):
    # one more block adds exactly act_bytes per token: what the budget multiplies by n_layer
    base = dict(vocab_size=96, n_embd=64, n_head=4, n_kv_head=4)
    cfg1, cfg2 = (ModelConfig(**{**base, **over, "n_layer": n}) for n in (1, 2))
    B, T = 3, 20
    assert saved_bytes(cfg2, mode) - saved_bytes(cfg1, mode) == act_bytes(cfg1, mode) * B * T


# the totals the model cards publish (rounded)
PUBLISHED = {"qwen2.5-0.5b": 0.49e9, "qwen2.5-1.5b": 1.54e9, "qwen2.5-7b": 7.62e9,
             "llama-3.1-8b": 8.03e9, "llama-3.2-1b": 1.24e9}


def test_presets_match_published():
    for name in PRESETS:
        n = num_params(load_config(name))
        assert abs(n - PUBLISHED[name]) / PUBLISHED[name] < 0.01, (name, n)
    assert num_params(load_config("Qwen2.5-0.5B")) == 494_032_768  # tied: embedding once


def test_fsdp_shards_state_kv_and_acts_scale():
    cfg = load_config("qwen2.5-1.5b")
    state = lambda b: b["weights"] + b["grads"] + b["optimizer"] + b["reference"]  # noqa: E731
    ddp, fsdp = budget(cfg, gpus=8), budget(cfg, gpus=8, fsdp=True)
    assert state(fsdp) == pytest.approx(state(ddp) / 8)
    assert budget(cfg, gpus=1, fsdp=True)["optimizer"] == ddp["optimizer"]
    assert fsdp["total"] < ddp["total"]
    # per-GPU batches: activations and the KV cache do not depend on the number of GPUs
    assert budget(cfg, gpus=1)["activations"] == ddp["activations"]
    kv = lambda **kw: budget(cfg, **kw)["kv cache"]  # noqa: E731
    assert kv(rollout_batch=128) == 2 * kv(rollout_batch=64)
    assert kv(seq_len=2048) == 2 * kv(seq_len=1024)
    assert budget(cfg, stage="sft")["kv cache"] == 0 and budget(cfg, stage="sft")["reference"] == 0
    on, off = budget(cfg, act_ckpt=True), budget(cfg, act_ckpt=False)
    assert on["activations"] < off["activations"] / 5 and on["logits"] == off["logits"]
    assert budget(cfg, micro_batch=16)["logits"] == 2 * on["logits"]
    # fp32 frozen copies: twice the reference; fp32 DDP samples with the policy itself (no copy,
    # an fp32 cache); a bf16 frozen dtype or FSDP samples with a copy in the frozen dtype
    full = budget(cfg, gpus=8, frozen_dtype="fp32")
    assert full["reference"] == 2 * ddp["reference"] and full["kv cache"] == 2 * ddp["kv cache"]
    assert full["rollout policy"] == 0
    assert ddp["rollout policy"] == fsdp["rollout policy"] == 2 * num_params(cfg)  # bf16 copies
    f32 = budget(cfg, gpus=8, fsdp=True, frozen_dtype="fp32")
    assert f32["kv cache"] == 2 * fsdp["kv cache"] and f32["rollout policy"] == 4 * num_params(cfg)


def test_budget_takes_a_hf_dict():
    assert budget(PRESETS["llama-3.1-8b"]) == budget(load_config("llama-3.1-8b"))


def test_cli_preset_and_table(capsys):
    main(["qwen2.5-7b", "--gpus", "8", "--fsdp"])
    out = capsys.readouterr().out
    assert "7.616B params" in out and "total" in out and "80 GiB yes" in out
    main(["--table"])
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")]
    assert len(rows) == 1 + len(PRESETS) * 3   # 1 GPU DDP, 8 GPUs DDP, 8 GPUs FSDP


def test_cli_hf_config_and_native_checkpoint(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(PRESETS["qwen2.5-0.5b"]))
    main([str(tmp_path)])
    assert "0.494B params" in capsys.readouterr().out
    cfg = ModelConfig(n_kv_head=2)
    torch.save({"model": {}, "model_config": cfg.to_dict(), "step": 0}, tmp_path / "ckpt.pt")
    main([str(tmp_path), "--stage", "sft"])  # ckpt.pt wins over config.json, as load_model does
    assert f"{num_params(cfg) / 1e9:.3f}B params" in capsys.readouterr().out


def bad(argv, capsys) -> str:
    """The CLI's failure: non-zero exit and exactly one line on stderr (returned)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code != 0 and len(lines) == 1, lines
    return lines[0]


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    # in-process (a `python -m` subprocess costs ~2 s of torch import on a busy box)
    assert "not a preset" in bad([str(tmp_path / "nope")], capsys)
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    assert "unsupported architecture" in bad([str(tmp_path)], capsys)
    (tmp_path / "config.json").write_text("{not json")
    assert "not readable JSON" in bad([str(tmp_path)], capsys)
    assert "--gpus" in bad(["qwen2.5-7b", "--gpus", "0"], capsys)
    assert "MODEL" in bad([], capsys)


@pytest.mark.parametrize("fsdp,dtype", [(False, "bf16"), (True, "bf16"), (False, "fp32")])
def test_budget_activations_match_autograd(fsdp, dtype):
    # the whole forward: n_layer blocks + the final norm, plus RoPE's cos/sin (B, T, head_dim),
    # which budget() leaves out (shared by all layers, small); autocast keeps them in fp32
    cfg = ModelConfig(vocab_size=96, n_layer=3, n_embd=64, n_head=4, n_kv_head=2, qkv_bias=True)
    mode = "fp32" if dtype == "fp32" else "bf16" if fsdp else "autocast"
    B, T = 3, 20
    rope = 2 * B * T * cfg.head_dim * (2 if mode == "bf16" else 4)
    b = budget(cfg, fsdp=fsdp, dtype=dtype, micro_batch=B, seq_len=T, act_ckpt=False)
    assert saved_bytes(cfg, mode, B, T) - rope == b["activations"]


# -----------------------------------------------------------------------------
# LoRA

SUBSETS = [LORA_TARGETS, ("q_proj", "v_proj"), ("o_proj", "down_proj"), ("gate_proj",),
           ("k_proj", "up_proj", "down_proj")]


@pytest.mark.parametrize("targets", SUBSETS)
@pytest.mark.parametrize("over", SMALL)
def test_lora_params_exact(over, targets):
    cfg = ModelConfig(**over)
    model = add_lora(GPT(cfg), 4, 8, targets)
    assert lora_params(cfg, 4, targets) == sum(p.numel() for p in model.parameters()
                                               if p.requires_grad)


@pytest.mark.parametrize("mode", ["autocast", "bf16", "fp32"])
@pytest.mark.parametrize("targets", SUBSETS)
def test_lora_act_bytes_match_autograd(mode, targets):
    # a block whose input needs a gradient (the first block's does not: 2 -> 3 layers), with
    # frozen weights and adapters on `targets`, saves exactly act_bytes(..., lora_rank) per token
    base = dict(vocab_size=96, n_embd=64, n_head=4, n_kv_head=2, qkv_bias=True)
    cfg2, cfg3 = (ModelConfig(**{**base, "n_layer": n}) for n in (2, 3))
    B, T, r = 3, 20, 4
    got = saved_bytes(cfg3, mode, lora_rank=r, lora_targets=targets) - saved_bytes(
        cfg2, mode, lora_rank=r, lora_targets=targets)
    assert got == act_bytes(cfg2, mode, r, targets) * B * T
    assert act_bytes(cfg2, mode, r) < act_bytes(cfg2, mode)   # frozen norms keep less


@pytest.mark.parametrize("fsdp,dtype,frozen", [(False, "bf16", "bf16"), (True, "bf16", "bf16"),
                                               (False, "bf16", "fp32"), (False, "fp32", "fp32")])
def test_lora_budget_activations_match_autograd(fsdp, dtype, frozen):
    # the whole LoRA forward: a bf16 base computes in bf16 ("bf16" mode), an fp32 one under
    # autocast; RoPE's cos/sin left out as above
    cfg = ModelConfig(vocab_size=96, n_layer=3, n_embd=64, n_head=4, n_kv_head=2, qkv_bias=True)
    mode = "fp32" if dtype == "fp32" else "bf16" if fsdp or frozen == "bf16" else "autocast"
    B, T = 3, 20
    rope = 2 * B * T * cfg.head_dim * (2 if mode == "bf16" else 4)
    b = budget(cfg, fsdp=fsdp, dtype=dtype, frozen_dtype=frozen, micro_batch=B, seq_len=T,
               act_ckpt=False, lora_rank=4)
    assert saved_bytes(cfg, mode, B, T, lora_rank=4) - rope == b["activations"]


def test_lora_budget_rows():
    cfg = load_config("qwen2.5-7b")
    P, L = num_params(cfg), lora_params(cfg, 16)
    assert L == 40_370_176           # PEFT's count for Qwen2.5-7B, r 16, all linear layers
    assert lora_params(load_config("llama-3.1-8b"), 16) == 41_943_040
    lora, full = budget(cfg, lora_rank=16), budget(cfg)
    # a bf16 frozen base, fp32 adapters + grads + AdamW, no reference, no rollout copy
    assert lora["weights"] == 2 * P + 4 * L and lora["grads"] == 4 * L
    assert lora["optimizer"] == 8 * L and lora["reference"] == 0 == lora["rollout policy"]
    assert lora["kv cache"] == full["kv cache"] and lora["logits"] == full["logits"]
    assert lora["compute weights"] == 2 * L      # autocast casts only the adapters
    assert budget(cfg, lora_rank=16, frozen_dtype="fp32")["compute weights"] == 2 * L + 2 * P
    fsdp = budget(cfg, gpus=8, fsdp=True, lora_rank=16)
    assert fsdp["weights"] == lora["weights"] / 8 and fsdp["rollout policy"] == 2 * P
    # the point of it: 7-8B RL on one 24 GiB card at the smallest setting, 48 GiB at the default
    for name in LORA_MODELS:
        c = load_config(name)
        small = budget(c, lora_rank=16, **LORA_SETTINGS[0])["total"]
        assert fits(small)[0] == 24 and fits(budget(c, lora_rank=16)["total"])[0] == 48
        assert not fits(budget(c, **LORA_SETTINGS[0])["total"])   # full fine-tuning: none
        assert small < 20 * GIB


def test_cli_lora(capsys):
    main(["qwen2.5-7b", "--lora_rank", "16", "--micro_batch", "1", "--rollout_batch", "16"])
    out = capsys.readouterr().out
    assert "LoRA rank 16" in out and "40.4M trainable" in out and "24 GiB yes" in out
    main(["--table", "--lora_rank", "16"])
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")]
    assert len(rows) == 1 + len(LORA_MODELS) * len(LORA_SETTINGS)
    assert "--lora_targets" in bad(["qwen2.5-7b", "--lora_targets", "lm_head"], capsys)
