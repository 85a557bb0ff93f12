"""
The RL update's packed rows (packing.pack_rows: the step's rows end to end, no padding,
block-diagonal attention, positions restarting per row) against the padded rows
(Policy.packed = False): the same log-probs, entropy, KL, values, loss and gradients to float
tolerance, on ragged prompts and replies, with --grad_accum chunks that split groups, with PPO's
value head and with LoRA.
"""
import copy
import os
from types import SimpleNamespace

import pytest
import torch

from helpers import make_model, one_thread  # noqa: F401  (one torch thread in this module)
from nanorlsp import ppo
from nanorlsp.dist import Dist
from nanorlsp.model import Packed, add_lora
from nanorlsp.policy import Policy
from nanorlsp.packing import flops, pack_plan, pack_rows
from nanorlsp.rlsp import Batch, build_sequences, reinforce_update

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = 64                                                          # helpers.TINY's vocab


def defaults(**over):
    """train_rl.py's flags at their defaults (its argument section, run without parsing argv),
    so the objectives read every flag they know, today's and later ones."""
    src = open(os.path.join(ROOT, "train_rl.py")).read()
    ns = {}
    exec(compile(src[:src.index("args = ap.parse_args()")], "train_rl.py", "exec"), ns)
    args = vars(ns["ap"].parse_args([]))
    for k, v in (("loss_agg", "token_mean"), ("clip", 0.2)):   # None: resolved after parsing
        if args.get(k, v) is None:
            args[k] = v
    return SimpleNamespace(**{**args, **over})


def ragged_batch(P=3, G=4, seed=0) -> Batch:
    """P prompts of different lengths, G replies each of lengths 1 .. Tn (a row at the cap)."""
    g = torch.Generator().manual_seed(seed)
    prompt_ids = [torch.randint(1, V, (n,), generator=g).tolist() for n in (5, 11, 2, 8)[:P]]
    lengths = torch.tensor([1, 9, 4, 13, 7, 2, 13, 5, 3, 11, 6, 10][:P * G])
    Tn = int(lengths.max())
    mask = (torch.arange(Tn)[None] < lengths[:, None]).float()                  # (B, Tn)
    tokens = torch.randint(1, V, (P * G, Tn), generator=g) * mask.long()
    seq, pos = build_sequences(prompt_ids, tokens, G, "cpu")
    return Batch(problems=[{}] * P, keys=list(range(P * G)), prompt_ids=prompt_ids,
                 tokens=tokens, mask=mask, rollout_logp=-torch.rand(P * G, Tn, generator=g) * mask,
                 lengths=lengths, finish=["stop"] * P * G, seq=seq, pos=pos, texts=[""] * P * G,
                 group=G, vocab=V)


def make_policy(algo="reinforce", lora=False) -> Policy:
    gpt = make_model(seed=1, scale=0.3, max_seq_len=64).train()
    ref = None
    if lora:
        add_lora(gpt, rank=4, alpha=8.0)
        with torch.no_grad():          # B != 0, so the policy is not its reference
            for name, p in gpt.named_parameters():
                if name.endswith("lora_B"):
                    p.normal_(0, 0.1)
    else:
        ref = make_model(seed=2, scale=0.3, max_seq_len=64).requires_grad_(False)
    torch.manual_seed(3)
    head = ppo.value_head(gpt.config.n_embd, "cpu") if algo == "ppo" else None
    return Policy(gpt, head, ref, Dist(), fsdp=False, dtype=torch.float32)


@pytest.mark.parametrize("share", [False, True])
def test_pack_rows_layout(share):
    """Fewer positions than the padded rows (fewer still with the prompts shared); each row's
    prompt and reply inputs where its logits read them, at the row's own positions."""
    batch = ragged_batch()
    rows = torch.arange(len(batch.tokens))
    ids, lay = pack_rows(batch, rows, share)
    assert isinstance(lay, Packed) and lay.at.shape == batch.tokens.shape
    n = batch.pos[:, 0] + batch.lengths                               # Lp - 1 + len per row
    assert ids.numel() < batch.seq.numel()
    if share:
        assert ids.numel() < pack_rows(batch, rows)[0].numel()
    else:
        assert ids.size(1) == int(n.max())
    flat_ids, flat_pos = ids.flatten(), lay.positions.flatten()
    for r in rows.tolist():
        at = lay.at[r, :int(batch.lengths[r])]           # the inputs predicting its reply
        assert flat_ids[at].tolist() == batch.seq[r, batch.pos[r, :len(at)]].tolist()
        assert flat_pos[at].tolist() == batch.pos[r, :len(at)].tolist()
        k, t = divmod(int(at[-1]), ids.size(1))           # its last query: packed row k, slot t
        seen = ids[k][lay.attn_mask[k, 0, t]]
        assert seen.tolist() == batch.seq[r, :int(n[r])].tolist()   # its prompt and reply only


@pytest.mark.parametrize("share", [False, True, None])          # None: Policy.flops decides
@pytest.mark.parametrize("algo,lora", [("reinforce", False), ("ppo", False), ("reinforce", True)])
def test_forward_and_logprobs_equal_padded(algo, lora, share):
    batch = ragged_batch()
    pol = make_policy(algo, lora)
    pol.share = share
    rows = torch.tensor([0, 3, 5, 6, 11])                    # a micro-batch across groups
    m = batch.mask[rows].bool()
    pol.packed = False
    lg0, v0 = pol.forward(batch, rows)
    ref0, _ = pol.logprobs(batch, 0.7, 2, reference=True)
    lp0, val0 = pol.logprobs(batch, 0.7, 3, values=algo == "ppo")
    pol.packed = True
    lg1, v1 = pol.forward(batch, rows)
    ref1, _ = pol.logprobs(batch, 0.7, 2, reference=True)
    lp1, val1 = pol.logprobs(batch, 0.7, 3, values=algo == "ppo")
    assert lg1.shape == lg0.shape
    torch.testing.assert_close(lg1[m], lg0[m], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(lg1).all()
    torch.testing.assert_close(ref1 * batch.mask, ref0 * batch.mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lp1 * batch.mask, lp0 * batch.mask, rtol=1e-5, atol=1e-5)
    if algo == "ppo":
        torch.testing.assert_close(v1[m], v0[m], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(val1, val0, rtol=1e-5, atol=1e-5)


def updated(pol, batch, s, algo):
    """The update's figures and the gradients its last optimizer step applied (SGD with a small
    lr, so PPO's later minibatches do not amplify rounding; clipping off), packed or padded as
    pol.packed says."""
    opt = torch.optim.SGD(pol.params, lr=1e-3)
    rewards = torch.linspace(-1, 2, len(batch.tokens))
    out = (ppo.update if algo == "ppo" else reinforce_update)(pol, opt, batch, rewards, s)
    return out, [p.grad for p in pol.params]


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("algo,lora,accum", [("reinforce", False, 1), ("reinforce", False, 5),
                                             ("ppo", False, 2), ("reinforce", True, 3)])
def test_update_equals_padded(algo, lora, accum, share):
    """loss, KL, entropy, clip_frac, logp_diff and the gradients: packed == padded, with each
    row alone and with a group's prompt shared (grad_accum 5 splits groups)."""
    batch = ragged_batch()
    s = defaults(algo=algo, grad_accum=accum, grad_clip=0.0, temperature=0.8, n_samples=4,
                 minibatches=3 if algo == "ppo" else 1, ppo_epochs=2)
    pad = make_policy(algo, lora)
    pack = copy.deepcopy(pad)
    pack.share = share
    pad.packed = False
    out0, d0 = updated(pad, batch, s, algo)
    out1, d1 = updated(pack, batch, s, algo)
    assert out0["updates"] == out1["updates"] > 0 and not out1["skipped"]
    for k in ("loss", "kl", "entropy", "clip_frac", "logp_diff", "grad_norm"):
        assert out1[k] == pytest.approx(out0[k], rel=1e-5, abs=1e-7), k
    assert all(g is not None for g in d0) and any(g.abs().max() > 0 for g in d0)
    for a, b in zip(d1, d0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_share_where_it_costs_fewer_flops():
    """A long prompt and short replies: sharing it costs fewer FLOPs; short prompts and long
    replies: a tree row's attention costs more than the prompts saved."""
    pol = make_policy()
    for Lp, n_new, share in ((40, 3, True), (2, 40, False)):
        g = torch.Generator().manual_seed(0)
        prompt_ids = [torch.randint(1, V, (Lp,), generator=g).tolist()]
        tokens = torch.randint(1, V, (8, n_new), generator=g)
        seq, pos = build_sequences(prompt_ids, tokens, 8, "cpu")
        batch = SimpleNamespace(seq=seq, pos=pos, lengths=torch.full((8,), n_new), group=8)
        cost = {sh: flops(pol.gpt.config, *pack_plan(batch, torch.arange(8), sh)[-2:])
                for sh in (0, 1)}
        assert (cost[1] < cost[0]) == share, (Lp, n_new, cost)
