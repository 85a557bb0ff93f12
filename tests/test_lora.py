"""LoRA checkpoints (nanorlsp/checkpoint.py): the adapters and the name of their base.

save_checkpoint of a LoRA model keeps the adapters alone; load_model loads the base again (a
native dir, an HF dir, itself perhaps a LoRA run), checks it, and merges; model_from_state keeps
the adapters apart (--resume). Every mismatch is one CheckpointError line. In-process, tiny.

    python -m pytest tests/test_lora.py -q
"""
import importlib.util
import os
import shutil

import pytest
import torch

from helpers import make_model, one_thread  # noqa: F401 (autouse fixture)
from nanorlsp.checkpoint import (CheckpointError, attach_lora, load_model, model_from_state,
                                 read_checkpoint, save_checkpoint, save_hf)
from nanorlsp.model import add_lora, is_lora_key, merge_lora
from nanorlsp.tokenizer import build_tiny_tokenizer

TOK = build_tiny_tokenizer()


def base_dir(d, seed=0):
    """A native checkpoint of a random tiny model (the base)."""
    save_checkpoint(str(d), make_model(seed=seed, scale=0.3, vocab_size=320), TOK, step=0,
                    args={})
    return str(d)


def trained(model, seed=0):
    """Give the adapters values as if trained (B nonzero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if is_lora_key(n):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def lora_run(tmp_path, base, name="run", **kw):
    model, _ = load_model(base)
    attach_lora(model, base, rank=kw.get("rank", 4), alpha=8, targets=kw.get(
        "targets", ("q_proj", "v_proj", "up_proj")))
    trained(model)
    d = str(tmp_path / name)
    save_checkpoint(d, model, TOK, step=5, args={})
    return d, model


def idx():
    return torch.randint(0, 320, (2, 11), generator=torch.Generator().manual_seed(0))


def test_checkpoint_keeps_the_adapters_and_names_the_base(tmp_path):
    base = base_dir(tmp_path / "base")
    d, model = lora_run(tmp_path, base)
    st = read_checkpoint(d)
    assert set(st["model"]) == {k for k in model.state_dict() if is_lora_key(k)}
    assert st["lora"]["base"] == os.path.abspath(base) and st["lora"]["rank"] == 4
    assert set(st["lora"]["base_sample"]) == set(read_checkpoint(base)["model"])
    # small: no base weight in the file (a sample that was a view once saved every storage)
    size = lambda p: os.path.getsize(os.path.join(p, "ckpt.pt"))  # noqa: E731
    assert size(d) < size(base) / 2, (size(d), size(base))
    with torch.no_grad():
        want = model(idx())
        # --resume: the base with the adapters on it, unmerged and equal to the saved ones
        again = model_from_state(st)
        assert again.lora["base"] == st["lora"]["base"]
        assert all(torch.equal(p, dict(model.named_parameters())[n])
                   for n, p in again.named_parameters())
        assert torch.equal(again(idx()), want)
        # eval.py: load_model merges into a plain model
        merged, tok = load_model(d)
        assert merged.lora is None and tok.encode("1+2") == TOK.encode("1+2")
        assert (merged(idx()) - want).abs().max() < 1e-4
        # a bf16 load of the same run: the base check accepts the rounded base
        bf16, _ = load_model(d, dtype=torch.bfloat16)
        assert bf16.embed_tokens.weight.dtype == torch.bfloat16
        # (bf16 weights and residual stream: measured 0.22 on logits up to ~3)
        assert (bf16(idx()) - want).abs().max() < 0.5


def test_the_base_must_be_the_one_trained_on(tmp_path):
    base = base_dir(tmp_path / "base")
    d, _ = lora_run(tmp_path, base)
    base_dir(base, seed=1)        # the base retrained (or overwritten) after the LoRA run
    with pytest.raises(CheckpointError, match="not the model the adapters were trained on"):
        load_model(d)
    shutil.rmtree(base)
    with pytest.raises(CheckpointError, match="LoRA checkpoint's base .*: no checkpoint or model"):
        load_model(d)
    other = tmp_path / "wide"     # another model config at the base's path
    save_checkpoint(str(other), make_model(vocab_size=320, n_embd=64), TOK, step=0, args={})
    shutil.copytree(other, base)
    with pytest.raises(CheckpointError, match="not the model of its config"):
        load_model(d)


def test_adapters_must_fit_the_record_and_errors_are_one_line(tmp_path):
    base = base_dir(tmp_path / "base")
    d, _ = lora_run(tmp_path, base)
    st = torch.load(os.path.join(d, "ckpt.pt"), weights_only=True)
    for change, match in [
            (lambda s: s["model"].pop("layers.0.attn.q_proj.lora_A"), "missing"),
            (lambda s: s["lora"].update(rank=8), "shape"),
            (lambda s: s["lora"].update(targets=["q_proj", "lm_head"]), "bad LoRA record"),
            (lambda s: s["lora"].pop("base"), "incomplete")]:
        bad = {**st, "model": dict(st["model"]), "lora": dict(st["lora"])}
        change(bad)
        with pytest.raises(CheckpointError, match=match) as e:
            model_from_state(bad)
        assert "\n" not in str(e.value)
    # a LoRA checkpoint whose base is itself (copied over its own base) is refused, not a loop
    loop = tmp_path / "loop"
    shutil.copytree(d, loop)
    st2 = torch.load(loop / "ckpt.pt", weights_only=True)
    st2["lora"]["base"] = str(loop)
    torch.save(st2, loop / "ckpt.pt")
    with pytest.raises(CheckpointError, match="whose base is itself"):
        load_model(str(loop))
    # add_lora alone does not know the base: such a model cannot be checkpointed
    with pytest.raises(ValueError, match="attach_lora"):
        save_checkpoint(str(tmp_path / "x"), add_lora(make_model(), 2, 4), TOK, step=0, args={})


def test_a_lora_run_on_a_lora_run_goes_down_the_chain(tmp_path):
    base = base_dir(tmp_path / "base")
    first, m1 = lora_run(tmp_path, base, "first")
    second, m2 = lora_run(tmp_path, first, "second", rank=2, targets=("o_proj", "down_proj"))
    assert read_checkpoint(second)["lora"]["base"] == os.path.abspath(first)
    with torch.no_grad():
        want = m2(idx())                  # m2's base is m1 merged
        merged, _ = load_model(second)
        assert (merged(idx()) - want).abs().max() < 1e-4
        assert (merged(idx()) - merge_lora(m1)(idx())).abs().max() > 1e-3


@pytest.mark.skipif(importlib.util.find_spec("safetensors") is None, reason="needs safetensors")
def test_a_hugging_face_base(tmp_path):
    """The base may be an HF dir (what a 7B comes as); save_hf of the LoRA model is merged."""
    hf_base = str(tmp_path / "hf")
    save_hf(make_model(seed=2, scale=0.3, vocab_size=320), TOK, hf_base)
    d, model = lora_run(tmp_path, hf_base)
    out = str(tmp_path / "export")
    save_hf(model, TOK, out)
    with torch.no_grad():
        want = model(idx())
        assert (load_model(d)[0](idx()) - want).abs().max() < 1e-4
        assert torch.equal(load_model(out)[0](idx()), load_model(d)[0](idx()))
