"""The RL objectives against values worked out by hand on tiny tensors."""
import math

import pytest
import torch

from nanorlsp.rl import (entropy, gae, group_advantages, kl_penalty, kl_value, masked_mean,
                         ppo_policy_loss, reinforce_loss, token_logprobs, truncated_is_weights,
                         value_loss)

t = torch.tensor


def test_group_advantages_by_hand():
    r = t([1., 0., 0., 1., 0., 0., 0., 1.])
    assert torch.allclose(group_advantages(r, 4), t([.5, -.5, -.5, .5, -.25, -.25, -.25, .75]))
    # leave-one-out: r_i minus the mean of the OTHER three
    loo = group_advantages(r, 4, "loo")
    assert torch.allclose(loo[:4], t([1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3]))
    assert torch.allclose(loo[4:], t([-1 / 3, -1 / 3, -1 / 3, 1.]))
    # std normalisation: group 1 has sample std sqrt(1/3)
    s = group_advantages(r, 4, std_norm=True)
    assert torch.allclose(s[:4], t([.5, -.5, -.5, .5]) / math.sqrt(1 / 3), atol=1e-5)
    assert torch.equal(group_advantages(t([1., 1., 1., 1.]), 2, std_norm=True), torch.zeros(4))
    with pytest.raises(ValueError):
        group_advantages(r, 3)


def test_reinforce_loss_by_hand():
    logp = t([[-1., -2.], [-.5, 0.]])
    adv, mask = t([1., -1.]), t([[1., 1.], [1., 0.]])
    # -( (1*-1 + 1*-2) + (-1*-0.5) ) / 3 tokens
    assert reinforce_loss(logp, adv, mask).item() == pytest.approx(2.5 / 3)
    # the gradient flows only through masked tokens, weighted by the advantage / token count
    lp = logp.clone().requires_grad_()
    reinforce_loss(lp, adv, mask).backward()
    assert torch.allclose(lp.grad, t([[-1 / 3, -1 / 3], [1 / 3, 0.]]))


def test_kl_estimators_by_hand():
    logp, ref = t([-1., -3.]), t([-2., -3.])
    assert torch.allclose(kl_penalty(logp, ref, "k1"), t([1., 0.]))
    assert torch.allclose(kl_penalty(logp, ref, "k3"), t([math.exp(-1) + 1 - 1, 0.]))
    # k3 is an unbiased, non-negative KL estimate: check on a 3-token distribution
    p, q = t([.5, .3, .2]), t([.2, .5, .3])
    kl = (p * (p / q).log()).sum()
    est = (p * kl_penalty(p.log(), q.log(), "k3")).sum()    # exact expectation under p
    assert est.item() == pytest.approx(kl.item(), rel=1e-5)
    assert (kl_penalty(torch.randn(100), torch.randn(100), "k3") >= 0).all()


def test_gae_by_hand():
    rewards = t([[0., 0., 1., 0.]])
    values = t([[.5, .6, .7, 9.]])              # the 9 is padding and must be ignored
    mask = t([[1., 1., 1., 0.]])
    g, lam = 1.0, 0.95
    d2 = 1 - .7                                 # last real token: next value is 0
    d1 = 0 + g * .7 - .6
    d0 = 0 + g * .6 - .5
    a2, a1 = d2, d1 + g * lam * d2
    a0 = d0 + g * lam * a1
    adv, ret = gae(rewards, values, mask, g, lam)
    assert torch.allclose(adv, t([[a0, a1, a2, 0.]]))
    assert torch.allclose(ret, t([[a0 + .5, a1 + .6, a2 + .7, 0.]]))
    # lambda = 1, gamma = 1: returns are the reward-to-go (Monte Carlo)
    _, ret1 = gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(ret1, t([[1., 1., 1., 0.]]))


def test_ppo_policy_loss_by_hand():
    old = t([[0., 0., 0., 0.]])
    logp = t([[math.log(1.5), math.log(1.5), math.log(.5), math.log(1.1)]])
    adv = t([[1., -1., -1., 2.]])
    mask = t([[1., 1., 1., 1.]])
    # A>0, rho 1.5: min(1.5, 1.2) = 1.2 (clipped); A<0, rho 1.5: min(-1.5, -1.2) = -1.5;
    # A<0, rho 0.5: min(-0.5, -0.8) = -0.8 (clipped); A=2, rho 1.1: 2.2 (inside the clip range)
    loss, frac = ppo_policy_loss(logp, old, adv, mask, clip=0.2)
    assert loss.item() == pytest.approx(-(1.2 - 1.5 - 0.8 + 2.2) / 4)
    assert frac.item() == pytest.approx(2 / 4)
    # sequence-level advantages broadcast over tokens
    l2, _ = ppo_policy_loss(logp[:, :1], old[:, :1], t([1.]), mask[:, :1])
    assert l2.item() == pytest.approx(-1.2)
    # truncated importance weights multiply each token's clipped loss (veRL, TRL), not the ratio
    w = t([[2., 1., .5, 0.]])
    lw, fw = ppo_policy_loss(logp, old, adv, mask, clip=0.2, weights=w)
    assert lw.item() == pytest.approx(-(2 * 1.2 - 1.5 - .5 * .8 + 0) / 4) and fw == frac


def test_value_loss_by_hand():
    v, v_old, ret, m = t([[.5, .1]]), t([[.2, .1]]), t([[1., 0.]]), t([[1., 1.]])
    # token 0: unclipped (0.5-1)^2 = .25, clipped v = 0.4 -> .36, max .36; token 1: .01
    assert value_loss(v, v_old, ret, m, clip=0.2).item() == pytest.approx(0.5 * (.36 + .01) / 2)


def test_token_logprobs_entropy_and_masks():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    tgt = torch.randint(0, 5, (2, 3))
    lp = token_logprobs(logits, tgt)
    assert torch.allclose(lp, torch.log_softmax(logits, -1).gather(-1, tgt[..., None])[..., 0])
    # vocab_limit renormalises over the allowed ids, as the sampler does
    lim = token_logprobs(logits, tgt.clamp(max=2), vocab_limit=3)
    assert torch.allclose(lim, torch.log_softmax(logits[..., :3], -1).gather(
        -1, tgt.clamp(max=2)[..., None])[..., 0])
    uniform = torch.zeros(1, 2, 4)
    assert entropy(uniform, t([[1., 0.]])).item() == pytest.approx(math.log(4))
    # a logged statistic: no autograd graph (it would hold (B, T, V) tensors through backward)
    assert not entropy(uniform.clone().requires_grad_(), t([[1., 1.]])).requires_grad
    assert masked_mean(t([1., 100.]), t([1., 0.])).item() == 1.0
    assert masked_mean(t([1.]), t([0.])).item() == 0.0


def expected_grad(kind, theta, ref_logp):
    """E_{y ~ pi}[grad_theta kl_penalty(log pi(y), log ref(y))] by exact enumeration over the
    categorical pi = softmax(theta): the weights pi(y) are the sampling distribution (no
    gradient flows through the sampling), the estimator's own gradient does."""
    theta = theta.clone().requires_grad_()
    logp = torch.log_softmax(theta, -1)
    (logp.exp().detach() * kl_penalty(logp, ref_logp, kind)).sum().backward()
    return theta.grad


def exact_grad(theta, ref_logp, forward=False):
    """grad_theta of KL(pi || ref) (reverse), or KL(ref || pi) (forward), exactly."""
    theta = theta.clone().requires_grad_()
    logp = torch.log_softmax(theta, -1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum() if forward else (logp.exp() * (logp - ref_logp)).sum()
    kl.backward()
    return theta.grad


def test_kl_estimators_expected_gradient_by_enumeration():
    """each estimator's expected gradient is a KL's gradient (k1, k2: the
    reverse KL(pi || ref); k3: the forward KL(ref || pi), as in TRL). The plain k1 loss (-log r,
    the old code) has expected gradient exactly 0."""
    torch.manual_seed(0)
    theta = torch.randn(6, dtype=torch.float64)
    ref_logp = torch.log_softmax(torch.randn(6, dtype=torch.float64), -1)
    rev, fwd = exact_grad(theta, ref_logp), exact_grad(theta, ref_logp, forward=True)
    assert rev.abs().max() > 1e-2 and (rev - fwd).abs().max() > 1e-3   # the two KLs differ here
    assert torch.allclose(expected_grad("k1", theta, ref_logp), rev, atol=1e-12)
    assert torch.allclose(expected_grad("k2", theta, ref_logp), rev, atol=1e-12)
    assert torch.allclose(expected_grad("k3", theta, ref_logp), fwd, atol=1e-12)
    # the naive k1 loss (logp - ref_logp): zero expected gradient, only noise
    th = theta.clone().requires_grad_()
    lp = torch.log_softmax(th, -1)
    (lp.exp().detach() * (lp - ref_logp)).sum().backward()
    assert th.grad.abs().max() < 1e-12
    # k1 keeps the k1 value (the unbiased estimate) for logging
    lp = torch.log_softmax(theta, -1)
    assert torch.allclose(kl_penalty(lp, ref_logp, "k1"), lp - ref_logp)


def test_kl_clamped_and_masked():
    """k3 overflowed (exp(log r) = inf at log r ~ 89), and inf * 0 = NaN on
    padding poisoned the masked mean. Now the log-ratio is clamped and padding is zeroed."""
    logp = t([[-100., -1.]])
    ref = t([[0., -1.]])                      # log r = 100 on a padding position
    mask = t([[0., 1.]])
    for kind in ("k1", "k2", "k3"):
        kl = kl_penalty(logp, ref, kind, mask)
        assert torch.isfinite(kl).all() and kl[0, 0] == 0.0, kind
        assert torch.isfinite(masked_mean(kl_penalty(logp, ref, kind), mask)), kind
    assert kl_penalty(t([-200.]), t([0.]), "k3").item() == 10.0      # clamped as veRL does
    assert torch.equal(kl_value(t([[-1., -2.]]), t([[-2., -9.]]), t([[1., 0.]])), t([[1., 0.]]))


def test_truncated_is_weights_and_weighted_reinforce():
    lp = t([[math.log(.5), math.log(.2), 0.]])
    roll = t([[math.log(.25), math.log(.4), 0.]])
    w = truncated_is_weights(lp, roll, t([[1., 1., 0.]]), cap=1.5)
    assert torch.allclose(w, t([[1.5, .5, 0.]]))            # ratio 2 capped at 1.5; 0.5 kept
    adv, mask = t([2.]), t([[1., 1., 0.]])
    assert reinforce_loss(lp, adv, mask, w).item() == pytest.approx(
        -(2 * 1.5 * math.log(.5) + 2 * .5 * math.log(.2)) / 2)


def test_entropy_respects_vocab_limit():
    """the entropy ignored the vocab limit (the padded embedding rows, which the
    sampler never draws), so it was the entropy of another distribution."""
    logits = torch.zeros(1, 1, 8)                            # uniform over 8 ids, 3 of them padding
    assert entropy(logits, t([[1.]]), vocab_limit=5).item() == pytest.approx(math.log(5))
    assert entropy(logits, t([[1.]])).item() == pytest.approx(math.log(8))


def test_value_head_runs_in_float32_under_autocast():
    """under bf16 autocast the value head's matmul ran in bf16 (values rounded to
    ~1e-2 at |V| ~ 2). Now the values equal the float32 head on the same hidden state."""
    from nanorlsp.model import GPT, ModelConfig
    from nanorlsp.rl import WithValues
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, n_layer=1, n_embd=64, n_head=2, n_kv_head=1))
    head = torch.nn.Linear(64, 1)
    with torch.no_grad():
        head.weight.mul_(40.0)                                  # values of a few units
    idx = torch.randint(0, 64, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, v = WithValues(model, head)(idx)
        _, h = model(idx, return_hidden=True)
    want = h.float() @ head.weight.float().T + head.bias.float()
    assert v.dtype == torch.float32 and v.abs().max() > 1
    assert torch.allclose(v, want.squeeze(-1), rtol=1e-5, atol=1e-5)


def test_fused_logprobs_and_entropy_equal_the_separate_ones():
    """The update takes log-probs and the entropy from one log-softmax: the same numbers as
    token_logprobs and entropy (vocab limit included), and the gradient flows only to logp."""
    from nanorlsp.rl import token_logprobs_and_entropy
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 12, requires_grad=True)
    tgt = torch.randint(0, 9, (3, 5))
    m = (torch.rand(3, 5) > 0.3).float()
    lp, ent_sum = token_logprobs_and_entropy(logits, tgt, m, vocab_limit=9)
    assert torch.allclose(lp, token_logprobs(logits, tgt, 9), atol=1e-6)
    assert ent_sum.item() == pytest.approx((entropy(logits, m, 9) * m.sum()).item(), rel=1e-5)
    assert not ent_sum.requires_grad and lp.requires_grad


def test_my_prompts_give_every_rank_a_share_of_every_minibatch():
    """rlsp.my_prompts: PPO's minibatch k is prompts k*C .. (k+1)*C - 1 of the step, and each
    rank holds the same number of prompts of each (DDP needs every rank in every backward)."""
    from nanorlsp.rlsp import my_prompts
    assert my_prompts(8, 1, 0, 1) == list(range(8))
    assert my_prompts(8, 2, 0, 2) == [0, 2, 4, 6] and my_prompts(8, 2, 1, 2) == [1, 3, 5, 7]
    shares = [my_prompts(12, 3, r, 2) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == list(range(12))
    assert all([i // 4 for i in s] == [0, 0, 1, 1, 2, 2] for s in shares)


def test_ppo_advantages_finite_when_every_reply_is_masked_out():
    """--mask_truncated with --algo ppo: a step whose replies were all cut has no loss token;
    its advantages are 0, not NaN (0 / 0 in the whitening), so the step is not skipped."""
    from types import SimpleNamespace
    from nanorlsp import ppo
    B, T = 2, 3
    batch = SimpleNamespace(mask=torch.zeros(B, T), lengths=torch.tensor([3, 3]))
    s = SimpleNamespace(kl_coef=0.05, gamma=1.0, gae_lambda=0.95)
    z = torch.zeros(B, T)
    adv, ret = ppo.advantages(batch, torch.tensor([1.0, 0.0]), z, z, z, s)
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()
    assert (adv == 0).all()
