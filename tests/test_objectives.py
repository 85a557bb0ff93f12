"""The objectives behind train_rl.py's --loss_agg, --policy_loss, --overlong_buffer and
--dynamic_sampling: hand-computed values, the gradients they must equal, and grad_accum
exactness on a tiny policy (nanorlsp/rl.py, nanorlsp/objectives.py)."""
import argparse
import math
from dataclasses import replace

import pytest
import torch

from data import get_task
from helpers import one_thread  # noqa: F401
from nanorlsp import dist, objectives
from nanorlsp.common import UserError
from nanorlsp.policy import setup_policy
from nanorlsp.rewards import overlong_penalty
from nanorlsp.rl import (agg_loss, agg_weights, cispo_token_loss, clipped_token_loss,
                         gspo_token_loss, informative_groups)
from nanorlsp.rlsp import my_prompts, reinforce_update, rollout

MASK = torch.tensor([[1., 1., 1., 0.], [1., 0., 0., 0.]])
LOSS = torch.tensor([[1., 2., 3., 9.], [4., 9., 9., 9.]])   # 9: padding, never counted


def test_agg_loss_by_hand():
    # token_mean (1+2+3+4)/4; seq_mean ((1+2+3)/3 + 4/1)/2; constant (1+2+3+4)/(2 rows x 5)
    assert agg_loss(LOSS, MASK, "token_mean", 5).item() == pytest.approx(2.5)
    assert agg_loss(LOSS, MASK, "seq_mean", 5).item() == pytest.approx(3.0)
    assert agg_loss(LOSS, MASK, "constant", 5).item() == pytest.approx(1.0)
    # an empty row counts no unit under any mode
    empty = torch.cat([MASK, torch.zeros(1, 4)])
    for mode in ("token_mean", "seq_mean", "constant"):
        assert agg_weights(empty, mode, 5)[1][2] == 0
    with pytest.raises(ValueError):
        agg_weights(MASK, "sum", 5)


def test_clipped_token_loss_by_hand():
    # rho = 1.5, 0.5, 1.1 and 0.5 (padding); eps_low 0.2, eps_high 0.28 (clip-higher)
    old = torch.zeros(2, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5], [1.1, 0.5]]))
    mask = torch.tensor([[1., 1.], [1., 0.]])
    loss, clipped = clipped_token_loss(logp, old, torch.tensor([1.0, -1.0]), mask, 0.2, 0.28)
    # A=+1: min(1.5, 1.28) = 1.28 and min(0.5, 0.8) = 0.5; A=-1: min(-1.1, -1.1) = -1.1
    assert loss.flatten().tolist() == pytest.approx([-1.28, -0.5, 1.1, 0.0])
    assert clipped.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    # without clip-higher the bound is 1.2
    assert clipped_token_loss(logp, old, torch.tensor([1.0, -1.0]), mask, 0.2)[0][0, 0].item() \
        == pytest.approx(-1.2)


def test_clipped_loss_at_ratio_1_has_reinforces_gradient():
    torch.manual_seed(0)
    logp = torch.randn(3, 4, requires_grad=True)
    mask = torch.tensor([[1., 1., 1., 1.], [1., 1., 0., 0.], [1., 0., 0., 0.]])
    adv = torch.tensor([0.5, -1.0, 2.0])
    for fn in (clipped_token_loss, gspo_token_loss, cispo_token_loss):
        loss, _ = fn(logp, logp.detach(), adv, mask, 0.2, 0.28)
        g, = torch.autograd.grad(loss.sum(), logp)
        assert torch.allclose(g, -adv[:, None] * mask), fn.__name__


def test_gspo_is_the_clipped_sequence_ratio():
    # row 0: ratios 1.1 and 1.3 -> s = sqrt(1.43) = 1.19583 (inside 1 +- 0.28: unclipped);
    # row 1: one token at ratio 2 -> s = 2, clipped to 1.28 with A = +1
    old = torch.zeros(2, 2)
    logp = torch.log(torch.tensor([[1.1, 1.3], [2.0, 7.0]])).requires_grad_()
    mask = torch.tensor([[1., 1.], [1., 0.]])
    adv = torch.tensor([1.0, 1.0])
    loss, clipped = gspo_token_loss(logp, old, adv, mask, 0.2, 0.28)
    s0 = math.sqrt(1.1 * 1.3)
    assert loss.detach().flatten().tolist() == pytest.approx([-s0, -s0, -1.28, 0.0], rel=1e-5)
    assert clipped.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    # per-reply token mean (seq_mean) = GSPO's sequence objective, gradient included
    g, = torch.autograd.grad(agg_loss(loss, mask, "seq_mean", 2), logp)
    direct = logp.detach().requires_grad_()
    s = (direct[0] * mask[0]).sum().div(2).exp()
    g_direct, = torch.autograd.grad(-s / 2, direct)   # row 1 is clipped: no gradient
    assert torch.allclose(g, g_direct)


def test_cispo_keeps_every_tokens_gradient_with_a_clipped_weight():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]])).requires_grad_()
    mask = torch.ones(1, 3)
    loss, clipped = cispo_token_loss(logp, old, torch.tensor([2.0]), mask, 0.2, 0.28)
    w = torch.tensor([1.28, 0.8, 1.1])                      # sg(clip(rho, 0.8, 1.28))
    assert loss.detach()[0].tolist() == pytest.approx((-w * 2 * logp.detach()[0]).tolist())
    assert clipped.tolist() == [[1.0, 1.0, 0.0]]
    g, = torch.autograd.grad(loss.sum(), logp)
    assert g[0].tolist() == pytest.approx((-2 * w).tolist())   # clipped tokens still move


def test_overlong_penalty_by_hand():
    # cap 10, buffer 4: free up to 6, then (6 - L) / 4, -1 at 10; cut by the cap: -1
    pen = overlong_penalty(torch.tensor([5, 6, 7, 8, 10, 10]),
                           ["stop"] * 5 + ["length"], max_new_tokens=10, buffer=4)
    assert pen.tolist() == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    with pytest.raises(ValueError):
        overlong_penalty(torch.tensor([1]), ["stop"], 10, 10)


def test_informative_groups():
    r = torch.tensor([1., 1., 0., 1., 0.5, 0.5])
    assert informative_groups(r, 2).tolist() == [False, True, False]


def flags(**kw):
    base = dict(algo="reinforce", policy_loss="reinforce", loss_agg=None, updates_per_batch=1,
                clip=None, clip_high=None, dynamic_sampling=False, overlong_buffer=0,
                max_new_tokens=16)
    return argparse.Namespace(**{**base, **kw})


def test_check_flags_defaults():
    s = flags()
    objectives.check_flags(s, 1)
    assert (s.clip, s.clip_high, s.loss_agg) == (0.2, 0.2, "token_mean")
    s = flags(policy_loss="gspo")
    objectives.check_flags(s, 1)
    assert (s.clip, s.clip_high, s.loss_agg) == (3e-4, 4e-4, "seq_mean")
    s = flags(policy_loss="clip", clip_high=0.28)
    objectives.check_flags(s, 1)
    assert (s.clip, s.clip_high) == (0.2, 0.28)


@pytest.mark.parametrize("kw, pattern", [
    (dict(algo="ppo", policy_loss="clip"), "--policy_loss clip is for --algo reinforce"),
    (dict(algo="ppo", loss_agg="constant"), "--loss_agg constant is for --algo reinforce"),
    (dict(algo="ppo", clip_high=0.3), "--clip_high is for"),
    (dict(algo="ppo", dynamic_sampling=True), "--dynamic_sampling"),
    (dict(updates_per_batch=2), "REINFORCE has no ratio"),
    (dict(policy_loss="clip", clip=0.2, clip_high=0.1), "below --clip"),
    (dict(overlong_buffer=16), "must be below --max_new_tokens"),
    (dict(dynamic_sampling=True), "one process"),
])
def test_check_flags_refusals(kw, pattern):
    with pytest.raises(UserError, match=pattern):
        objectives.check_flags(flags(**kw), 2 if kw.get("dynamic_sampling") else 1)


# -----------------------------------------------------------------------------
# on a tiny policy: grad_accum exactness, the clipped update at N = 1

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from test_train_rl import tiny_ckpt
    sft = tiny_ckpt(tmp_path_factory.mktemp("sft"))
    s = argparse.Namespace(init_from=sft, out_dir=str(tmp_path_factory.mktemp("rl")),
                           algo="reinforce", lora_rank=0, fsdp=False, act_ckpt=False, seed=0,
                           lr=1.0, prompts_per_step=3, n_samples=2, max_new_tokens=8,
                           temperature=1.0, kl_coef=0.05, kl_estimator="k3", baseline="mean",
                           std_norm=False, tis_cap=0.0, grad_accum=1, grad_clip=0.0,
                           loss_agg="token_mean", policy_loss="reinforce", updates_per_batch=1,
                           clip=0.2, clip_high=0.28, mask_truncated=False)
    d = dist.setup("cpu")
    policy, tok, _, _ = setup_policy(s, d, None, torch.float32, [])
    prompts = get_task("arith").make_problems("train", 3, seed=0)
    batch = rollout(policy, tok, prompts, my_prompts(3, 1, 0, 1), s, step=0)
    # ragged replies (the random model runs every row to the cap): lengths 8, 3, 5, 1, 8, 6
    lengths = torch.tensor([8, 3, 5, 1, 8, 6])
    mask = (torch.arange(batch.tokens.size(1))[None] < lengths[:, None]).float()
    batch = replace(batch, mask=mask, lengths=lengths)
    rewards = torch.tensor([1.0, 0.0, 0.5, -0.5, 0.0, 1.0])
    return policy, batch, rewards, s


def close(a, b):
    """Equal updates up to float32 rounding (sums in another order), relative to the largest."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def sgd_delta(policy, batch, rewards, s, update):
    """-grad of one update (SGD, lr 1), the weights restored after."""
    saved = [p.detach().clone() for p in policy.params]
    out = update(policy, torch.optim.SGD(policy.params, lr=1.0), batch, rewards, s)
    assert out["updates"] == s.updates_per_batch
    delta = torch.cat([(p.detach() - q).flatten() for p, q in zip(policy.params, saved)])
    with torch.no_grad():
        for p, q in zip(policy.params, saved):
            p.copy_(q)
    return delta


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean", "constant"])
@pytest.mark.parametrize("policy_loss", ["reinforce", "clip", "gspo", "cispo"])
def test_grad_accum_gives_the_same_update(setup, loss_agg, policy_loss):
    policy, batch, rewards, s = setup
    update = reinforce_update if policy_loss == "reinforce" else objectives.clipped_update
    one = sgd_delta(policy, batch, rewards, argparse.Namespace(
        **dict(vars(s), loss_agg=loss_agg, policy_loss=policy_loss, grad_accum=1)), update)
    two = sgd_delta(policy, batch, rewards, argparse.Namespace(
        **dict(vars(s), loss_agg=loss_agg, policy_loss=policy_loss, grad_accum=2)), update)
    assert one.abs().max() > 0
    assert close(one, two)


def test_loss_agg_modes_differ_on_ragged_rows(setup):
    policy, batch, rewards, s = setup
    deltas = [sgd_delta(policy, batch, rewards, argparse.Namespace(**dict(vars(s), loss_agg=m)),
                        reinforce_update) for m in ("token_mean", "seq_mean", "constant")]
    # constant = token_mean x (tokens / (rows x max_new_tokens)) = x 31 / 48
    assert close(deltas[2], deltas[0] * 31 / 48)
    assert not torch.allclose(deltas[1], deltas[0], rtol=1e-2)


def test_clip_with_one_update_equals_reinforce(setup):
    policy, batch, rewards, s = setup
    r = sgd_delta(policy, batch, rewards, s, reinforce_update)
    c = sgd_delta(policy, batch, rewards, argparse.Namespace(**dict(vars(s), policy_loss="clip")),
                  objectives.clipped_update)
    assert close(r, c)


def test_mask_truncated_takes_cut_rows_out_of_the_loss(setup):
    policy, batch, rewards, s = setup
    cut = replace(batch, finish=["length", "stop", "stop", "stop", "length", "stop"])
    sc = dict(total=rewards)
    s2 = argparse.Namespace(**dict(vars(s), mask_truncated=True))
    saved = [p.detach().clone() for p in policy.params]
    objectives.update(policy, torch.optim.SGD(policy.params, lr=1.0), cut, sc, s2)
    got = torch.cat([(p.detach() - q).flatten() for p, q in zip(policy.params, saved)])
    with torch.no_grad():
        for p, q in zip(policy.params, saved):
            p.copy_(q)
    keep = torch.tensor([0., 1., 1., 1., 0., 1.])
    want = sgd_delta(policy, replace(batch, mask=batch.mask * keep[:, None]), rewards, s,
                     reinforce_update)
    assert close(got, want)


# -----------------------------------------------------------------------------
# dynamic sampling on hand-made draws (no model)

def fake_draw(tag: int, lens: list[int], rewards: list[float], G=2):
    """(prompts, Batch, sc) of one draw: P = len(lens) / G prompts, row i's tokens all
    tag * 10 + i + 1 for its lens[i] tokens."""
    from nanorlsp.rlsp import Batch, build_sequences
    B, Tn = len(lens), max(lens)
    prompts = [dict(prompt=f"q{tag}-{p}") for p in range(B // G)]
    prompt_ids = [[tag + 1] * (p + 1) for p in range(B // G)]       # ragged prompts
    mask = (torch.arange(Tn)[None] < torch.tensor(lens)[:, None]).float()
    tokens = (torch.arange(B)[:, None] + 1 + tag * 10) * mask.long()
    seq, pos = build_sequences(prompt_ids, tokens, G, "cpu")
    batch = Batch(prompts, list(range(B)), prompt_ids, tokens, mask, -mask, torch.tensor(lens),
                  ["stop"] * B, seq, pos, [f"{tag}-{i}" for i in range(B)], G, 64)
    sc = dict(total=torch.tensor(rewards), correct=[r > 0 for r in rewards], coef=0.5,
              acc=0.0, easy=None)
    return prompts, batch, sc


def test_refill_swaps_flat_groups_for_redrawn_ones():
    s = argparse.Namespace(dynamic_sampling=True, max_redraws=3, seed=1)
    first = fake_draw(0, [3, 1, 2, 2], [1.0, 1.0, 0.0, 1.0])       # group 0 flat
    redraws = {1: fake_draw(1, [1, 1, 4, 2], [0.5, 0.5, 1.0, 0.0])}   # group 1 informative
    calls = []

    def sample(more, step, k):
        calls.append((step, k, [p["prompt"] for p in more]))
        return redraws[k][1], redraws[k][2]

    problems = [dict(prompt=f"p{i}") for i in range(50)]
    prompts, batch, sc = objectives.refill(*first, sample, problems, 7, s)
    # one redraw of P = 2 prompts, a pure function of (seed, step, redraw)
    more = objectives.redraw_prompts(problems, 1, 7, 1, 2)
    assert calls == [(7, 1, [p["prompt"] for p in more])]
    assert prompts == [first[0][1], more[1]] and batch.problems == prompts
    assert batch.texts == ["0-2", "0-3", "1-2", "1-3"] and batch.keys == [0, 1, 2, 3]
    assert batch.lengths.tolist() == [2, 2, 4, 2] and batch.mask.sum(1).tolist() == [2, 2, 4, 2]
    assert batch.tokens[2].tolist() == [13, 13, 13, 13]
    assert batch.tokens[0].tolist() == [3, 3, 0, 0]
    assert batch.prompt_ids == [[1, 1], [2, 2]]
    # the rows are rebuilt: prompt then completion, pos predicting each completion token
    assert batch.seq[2, :6].tolist() == [2, 2, 13, 13, 13, 13]
    assert batch.pos[2].tolist() == [1, 2, 3, 4]
    assert sc["total"].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert sc["correct"] == [False, True, True, False]
    assert sc["acc"] == 0.5 and sc["figures"] == dict(prompts_drawn=4, dyn_groups=2,
                                                      flat_first_draw=0.5)


def test_refill_short_trains_on_what_there_is():
    s = argparse.Namespace(dynamic_sampling=True, max_redraws=1, seed=1)
    first = fake_draw(0, [3, 1, 2, 2], [1.0, 1.0, 0.0, 1.0])
    flat = fake_draw(1, [1, 1, 4, 2], [0.5, 0.5, 1.0, 1.0])
    prompts, batch, sc = objectives.refill(*first, lambda more, step, k: flat[1:], [{}] * 9, 0, s)
    assert batch.texts == ["0-2", "0-3"] and sc["figures"] == dict(prompts_drawn=4, dyn_groups=1,
                                                                  flat_first_draw=0.5)
    # nothing informative at all: the first draw as it is
    s.max_redraws = 0
    everything_flat = fake_draw(0, [3, 1, 2, 2], [1.0, 1.0, 0.0, 0.0])
    prompts, batch, sc = objectives.refill(*everything_flat, None, [], 0, s)
    assert batch is everything_flat[1] and sc["figures"] == dict(prompts_drawn=2, dyn_groups=0,
                                                                 flat_first_draw=1.0)
    # no redraw allowed: the informative group alone; every group informative: the draw as is
    prompts, batch, sc = objectives.refill(*first, None, [], 0, s)
    assert batch.texts == ["0-2", "0-3"] and sc["figures"] == dict(prompts_drawn=2, dyn_groups=1,
                                                                  flat_first_draw=0.5)
    prompts, batch, sc = objectives.refill(*flat[:2], dict(flat[2], total=torch.arange(4.),
                                                            correct=[False, True, True, False]),
                                           None, [], 0, s)
    assert batch is flat[1] and sc["figures"] == dict(prompts_drawn=2, dyn_groups=2,
                                                       flat_first_draw=0.0)
    s.dynamic_sampling = False
    assert objectives.refill(*first, None, [], 0, s) == first


def test_refill_filters_on_the_verdicts_not_the_total():
    """DAPO keeps a group with some replies right and some wrong (0 < correct < G): an all-wrong
    group whose totals differ (rlsp's length term, the repetition guard) is dropped and redrawn,
    an all-right one too, and a mixed group stays whatever its totals."""
    s = argparse.Namespace(dynamic_sampling=True, max_redraws=1, seed=1)
    first = fake_draw(0, [3, 1, 2, 2, 4, 4], [-0.02, -0.05, 0.98, 0.97, 0.0, 0.0], G=2)
    first[2]["correct"] = [False, False, True, True, True, False]     # groups: wrong, right, mixed
    more = fake_draw(1, [1, 2, 2, 1, 3, 3], [-0.1, -0.2, 0.9, -0.3, 0.0, 0.0], G=2)
    more[2]["correct"] = [False, False, True, False, False, False]
    prompts, batch, sc = objectives.refill(*first, lambda m, step, k: more[1:],
                                           [dict(prompt=f"p{i}") for i in range(9)], 0, s)
    assert batch.texts == ["0-4", "0-5", "1-2", "1-3"]
    assert sc["correct"] == [True, False, True, False]
    assert sc["figures"] == dict(prompts_drawn=6, dyn_groups=2,
                                 flat_first_draw=pytest.approx(2 / 3))
