"""The RLSP reward parts, by hand, and the anti-gaming guard."""
import math
import random

import pytest
import torch

from data import get_task
from nanorlsp.rewards import RewardConfig, coef_at, repeated_tokens, score
from nanorlsp.tokenizer import build_tiny_tokenizer


def one(ids, correct=True, has_answer=True, **kw):
    cfg = RewardConfig(**kw)
    return {k: float(v[0]) for k, v in score([ids], [correct], [has_answer], cfg, cfg.coef).items()}


def test_outcome_and_rlsp_by_hand():
    ids = list(range(20))                                    # 20 distinct tokens, no repeats
    r = one(ids)
    assert r["outcome"] == 1.0 and r["explore"] == pytest.approx(-0.5 / 20)
    assert r["repetition"] == 0.0 and r["total"] == pytest.approx(1 - 0.025)
    assert one(ids, correct=False)["total"] == pytest.approx(-0.025)
    assert one(ids, correct=False, has_answer=False)["outcome"] == -0.5
    assert one([], correct=True)["explore"] == pytest.approx(-0.5)   # L floored at 1
    assert one(ids, explore="none")["total"] == 1.0


def test_linear_and_cosine_by_hand():
    ids = list(range(64))
    assert one(ids, explore="linear", coef=0.2)["explore"] == pytest.approx(0.2 * 64 / 128)
    assert one(list(range(300)), explore="linear", coef=0.2)["explore"] == pytest.approx(0.2)
    # cosine at L = 64 of L_max 256: correct (0.5, 1.0) -> 0.5 + 0.5 * (1 + cos(pi/4)) / 2
    want = 0.5 + 0.5 * (1 + math.cos(math.pi / 4)) / 2
    assert one(ids, explore="cosine")["total"] == pytest.approx(want)
    want_wrong = 0.0 - 0.5 * (1 + math.cos(math.pi / 4)) / 2
    assert one(ids, correct=False, explore="cosine")["total"] == pytest.approx(want_wrong)
    assert one(list(range(300)), explore="cosine")["total"] == pytest.approx(-1.0)  # past L_max
    # correct short beats correct long; wrong long beats wrong short
    short, long_ = list(range(10)), list(range(200))
    assert one(short, explore="cosine")["total"] > one(long_, explore="cosine")["total"]
    assert one(long_, False, explore="cosine")["total"] > one(short, False, explore="cosine")["total"]


def test_repeated_tokens():
    line = list(range(10))
    assert repeated_tokens(line, 4) == 0
    # 27 4-grams: the first copy's 7 and the 3 spanning the first seam are new, the other 17 repeat
    assert repeated_tokens(line * 3, 4) == 17
    assert repeated_tokens([1] * 50, 8) == 50 - 8     # one distinct 8-gram


def test_schedules():
    c = RewardConfig(coef=0.4, schedule="linear", schedule_steps=10)
    assert [coef_at(c, s) for s in (0, 5, 10, 20)] == pytest.approx([0.4, 0.2, 0.0, 0.0])
    t = RewardConfig(coef=0.4, schedule="threshold", acc_threshold=0.8)
    assert coef_at(t, 3, 0.5) == 0.4 and coef_at(t, 3, 0.85) == 0.0
    with pytest.raises(ValueError, match="unknown exploration reward 'long'"):
        RewardConfig(explore="long")


@pytest.mark.parametrize("explore", ["rlsp", "linear", "cosine", "none"])
def test_padding_never_out_earns_a_concise_correct_answer(explore):
    """Real arith reasoning, padded with repeated lines or whole repeated copies, never earns
    more than the concise correct response under the default settings of each reward."""
    rows = [r for r in get_task("arith").make_sft_examples(300, seed=0) if r["style"] != "direct"]
    tok = build_tiny_tokenizer((r["response"] for r in rows), n_merges=64)
    rng = random.Random(0)
    cfg = RewardConfig(explore=explore)
    for r in rows[:60]:
        reason = r["response"].rsplit("\\boxed", 1)[0]
        lines = reason.strip().split("\n")
        pads = [reason + (lines[-1] + "\n") * k for k in (5, 50)]
        pads += [reason * 4, reason + "\n".join(rng.choice(lines) for _ in range(40))]
        ids = [tok.encode(reason)] + [tok.encode(p) for p in pads]
        tot = score(ids, [True] * len(ids), [True] * len(ids), cfg, cfg.coef)["total"]
        assert torch.all(tot[1:] <= tot[0] + 1e-9), (explore, tot.tolist(), reason)


def test_adaptive_coefs_pay_hard_groups_and_charge_easy_ones():
    from nanorlsp.rewards import adaptive_coefs
    correct = [True, True, True, True,   False, True, False, False,   True, True, True, False]
    c = adaptive_coefs(correct, 4, 0.5, acc_threshold=0.75)   # group accuracy 1.0, 0.25, 0.75
    assert c.tolist() == [-0.5] * 4 + [0.5] * 4 + [-0.5] * 4
    cfg = RewardConfig(explore="rlsp", schedule="adaptive", acc_threshold=0.75)
    short, long_ = [1] * 10, list(range(50))
    parts = score([short, long_, short, long_], [True] * 4, [True] * 4, cfg,
                  torch.tensor([0.5, 0.5, -0.5, -0.5]))
    ex = parts["explore"].tolist()
    assert ex[1] > ex[0]                  # hard prompt: longer reasoning is paid more
    assert ex[2] > ex[3] > 0              # easy prompt: shorter is better (+coef / L)
    lin = RewardConfig(explore="linear", schedule="adaptive")
    e = score([long_, long_], [True, True], [True, True], lin, torch.tensor([0.2, -0.2]))["explore"]
    assert e.tolist() == pytest.approx([0.2 * 50 / 128, -0.2 * 50 / 128])
    with pytest.raises(ValueError, match="adaptive"):
        RewardConfig(explore="cosine", schedule="adaptive")
