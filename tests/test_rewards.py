"""The RLSP reward parts, by hand, and the anti-gaming guard."""
import math
import os
import random

import pytest
import torch

from data import get_task
from nanorlsp.rewards import (RewardConfig, coef_at, line_verdicts, repeated_tokens, score,
                              token_pieces)
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
    assert one(list(range(300)), explore="cosine")["total"] == pytest.approx(-0.5)  # past L_max
    # correct short beats correct long; wrong long beats wrong short
    short, long_ = list(range(10)), list(range(200))
    assert one(short, explore="cosine")["total"] > one(long_, explore="cosine")["total"]
    assert one(long_, False, explore="cosine")["total"] > one(short, False, explore="cosine")["total"]


def paper(texts, correct, coef=0.5, **kw):
    """rlsp_paper's parts for replies (has_answer passed as True: the reward reads the box)."""
    cfg = RewardConfig(explore="rlsp_paper", coef=coef, **kw)
    ids = [BYTES.encode(t) for t in texts]
    return score(ids, correct, [True] * len(texts), cfg, cfg.coef, texts=texts)


WORK = "7 * 6: 7 * 5 = 35, plus 7 is 42. Check: "     # 40 characters: L = 40 / 4 = 10


def test_rlsp_paper_by_hand():
    """The authors' reward: R = 1[correct] - lambda / L, L = characters before the first
    \\boxed / 4 (a float, floored at 1), -0.5 without a box whatever the checker found, clipped
    to [-10, 10]; no repetition term."""
    assert len(WORK) == 40
    right, no_box = WORK + "\\boxed{42}", WORK + "so the answer is 42"
    two = "first guess: \\boxed{41}, no. " + WORK + "\\boxed{42}"   # 13 chars before the first
    p = paper([right, right, no_box, two, "\\boxed{42}", WORK + "\\boxed{42"],
              [True, False, True, True, True, False])
    assert p["outcome"].tolist() == [1.0, 0.0, -0.5, 1.0, 1.0, -0.5]   # unclosed box: none
    assert p["eff_len"].tolist() == [10.0, 10.0, 59 / 4, 13 / 4, 1.0, 49 / 4]
    assert p["explore"].tolist() == pytest.approx([-0.05, -0.05, -0.5 / 14.75, -0.5 / 3.25,
                                                   -0.5, -0.5 / 12.25])
    assert p["total"].tolist() == pytest.approx([0.95, -0.05, -0.5 - 0.5 / 14.75,
                                                 1 - 0.5 / 3.25, 0.5, -0.5 - 0.5 / 12.25])
    assert p["repetition"].tolist() == [0.0] * 6 and p["economy"].tolist() == [0.0] * 6
    # a huge lambda: 1 - 1000 / 10 clips at -10; the adaptive schedule's flipped sign at +10
    assert paper([right], [True], coef=1000.0)["total"].tolist() == [-10.0]
    flipped = score([[]], [True], [True], RewardConfig(explore="rlsp_paper"),
                    torch.tensor([-1000.0]), texts=[right])
    assert flipped["total"].tolist() == [10.0]


def test_rlsp_paper_has_no_repetition_guard_and_needs_texts():
    """Padding pays under the authors' form (they had no guard): the reply read in characters,
    repeated lines included; rlsp's guard charges the same padding."""
    pad = WORK + "\n" + "42 - 35 = 7.\n" * 10 + "\\boxed{42}"        # one line, ten times
    p = paper([pad, WORK + "\\boxed{42}"], [True, True])
    assert p["total"][0] > p["total"][1] and p["repetition"].tolist() == [0.0, 0.0]
    rlsp = score([BYTES.encode(pad.split("\\boxed")[0])], [True], [True], RewardConfig(), 0.5,
                 pieces=BYTES_PIECES)
    assert rlsp["repetition"].item() < 0
    with pytest.raises(ValueError, match="texts"):
        score([[1]], [True], [True], RewardConfig(explore="rlsp_paper"), 0.5)


def test_rlsp_paper_through_score_texts_on_the_synthetic_tasks():
    """rlsp.score_texts under rlsp_paper: a trace ending in its box scores 1[correct] - 0.5 /
    (chars / 4); the reply cut before its box is no answer (-0.5), as the logged has_answer
    says."""
    from nanorlsp.rlsp import score_texts
    cfg = RewardConfig(explore="rlsp_paper")
    for name in ("arith", "countdown", "countdown_small"):
        task = get_task(name)
        for r in task.make_sft_examples(4, seed=1):   # a demonstration and its problem
            assert r["response"].count("\\boxed") == 1    # the first box: the one checked
            texts = [r["response"], r["response"].split("\\boxed")[0]]
            got = score_texts(texts, [r, r], task, BYTES, cfg, cfg.coef)
            ok, L = task.check(texts[0], r), max(1.0, texts[0].index("\\boxed") / 4)
            assert got["correct"] == [ok, False] and got["has_answer"] == [True, False], name
            assert got["total"].tolist() == pytest.approx([ok - 0.5 / L, -0.5 - 0.5 / L])


DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "data")


@pytest.mark.skipif(not os.path.isfile(os.path.join(DATA, "math_train.jsonl")) or
                    not os.path.isfile(os.path.join(DATA, "gsm8k_train.jsonl")),
                    reason="../shared/data absent")
@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_rlsp_paper_on_a_real_task_pays_no_box_minus_half(name):
    """On the real tasks the checker falls back to the last number; under rlsp_paper a right
    reply without \\boxed is still -0.5 (and logged as no answer), under rlsp it is 1."""
    from nanorlsp.rlsp import score_texts
    task = get_task(name)
    p = dict(task.make_problems("train", 1, seed=0)[0])
    ans = p["answer"]
    texts = [WORK + f"\\boxed{{{ans}}}", WORK + f"so the answer is {ans}"]
    got = score_texts(texts, [p, p], task, BYTES, RewardConfig(explore="rlsp_paper"), 0.5)
    assert got["correct"] == [True, True] and got["has_answer"] == [True, False]
    assert got["outcome"].tolist() == [1.0, -0.5]
    assert got["total"].tolist() == pytest.approx([0.95, -0.5 - 0.5 / (len(texts[1]) / 4)])
    assert score_texts(texts, [p, p], task, BYTES, RewardConfig(), 0.5)["outcome"].tolist() == \
        [1.0, 1.0]


def test_cosine_overlong_answer_never_below_no_answer():
    """Past L_max a boxed reply gets exceed_penalty, which must not be below the no-answer
    penalty (it was -1 < -0.5: stopping without a box beat a long boxed answer), nor above the
    curve (running past L_max must not pay)."""
    long_ = list(range(300))                                  # L = 300 > L_max = 256
    no_box = one(long_, correct=False, has_answer=False, explore="cosine")["total"]
    assert no_box == pytest.approx(-0.5)                      # the outcome penalty alone
    for ok in (True, False):
        boxed = one(long_, correct=ok, explore="cosine")["total"]
        assert boxed == pytest.approx(-0.5) and boxed >= no_box
    # inside L_max every reply is at least as good: wrong at L = 0 is the curve's floor, -0.5
    assert one([], correct=False, explore="cosine")["total"] == pytest.approx(-0.5)
    assert one(list(range(256)), correct=False, explore="cosine")["total"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no_answer_penalty <= exceed_penalty"):
        RewardConfig(explore="cosine", exceed_penalty=-1.0)
    with pytest.raises(ValueError, match="no_answer_penalty <= exceed_penalty"):
        RewardConfig(explore="cosine", exceed_penalty=0.2)    # above wrong-at-L=0: -0.5
    RewardConfig(explore="rlsp", exceed_penalty=-1.0)         # unused outside cosine


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


# -----------------------------------------------------------------------------
# the repetition guard on lines: search is not repetition, padding is

# A countdown search with a transposition: [3, 12] is reached by 1+2 then 4*3 and by 4*3 then
# 1+2, and the DFS (no table across branches) lists its leaves again, in another order.
SEARCH = """goal 50 from [1, 2, 3, 4]
try 1+2=3 -> [3, 3, 4]
 try 4*3=12 -> [3, 12]
  12+3=15 no
  12*3=36 no
 backtrack
backtrack
try 4*3=12 -> [1, 2, 12]
 try 1+2=3 -> [3, 12]
  12*3=36 no
  12+3=15 no
 backtrack
backtrack
"""
SEARCH_VERDICTS = ["novel"] * 6 + ["revisit"] + ["novel"] * 2 + ["revisit"] * 4
BYTES = build_tiny_tokenizer()                 # one token per byte: token counts are byte counts
BYTES_PIECES = token_pieces(BYTES)


def verdicts(text):
    ids = BYTES.encode(text)
    found = [v for _, _, v in line_verdicts(ids, BYTES_PIECES)]
    return found, repeated_tokens(ids, 8, BYTES_PIECES)


def test_line_verdicts_by_hand():
    """The search's re-expanded leaves and its backtracks are revisits (free); copies repeat."""
    assert verdicts(SEARCH) == (SEARCH_VERDICTS, 0)
    # the last line again, three times: a copy of its own sibling, then after a repeat
    assert verdicts(SEARCH + "backtrack\n" * 3) == (SEARCH_VERDICTS + ["repeat"] * 3, 30)
    # the whole search again, as written or re-indented (whitespace is not content)
    assert verdicts(SEARCH * 2) == (SEARCH_VERDICTS + ["repeat"] * 13, len(SEARCH))
    shifted = "".join("  " + line.replace(" ", "  ") + " \n" for line in SEARCH.splitlines())
    assert verdicts(SEARCH + shifted) == (SEARCH_VERDICTS + ["repeat"] * 13, len(shifted))
    # a loop of one state, and blank lines
    loop = " try 1+2=3 -> [3, 12]\n"
    assert verdicts(SEARCH + loop * 4)[1] == 4 * len(loop)
    assert verdicts(SEARCH + "\n" * 5 + "   \n") == (SEARCH_VERDICTS + ["blank"] * 6, 9)
    # a node's children re-listed under a new line is the transposition itself (free), once:
    # a second copy under the same line repeats
    leaves = "  12*3=36 no\n  12+3=15 no\n"
    v, rep = verdicts(SEARCH + "try 3*4=12 -> [1, 2, 12]\n" + leaves + leaves)
    assert v == SEARCH_VERDICTS + ["novel", "revisit", "revisit", "repeat", "repeat"]
    assert rep == len(leaves)
    # a loop inside one line (no newline) is left to the n-gram guard
    assert verdicts("12+3=15 no " * 6)[1] == 11 * 5 - 7


def _demos(task_name, n):
    """The task's SFT demonstrations (all but direct, whose reasoning is empty), the tiny
    tokenizer trained on them and its pieces."""
    rows = [r for r in get_task(task_name).make_sft_examples(n, seed=0) if r["style"] != "direct"]
    tok = build_tiny_tokenizer((r["response"] for r in rows), n_merges=256)
    return rows, tok, token_pieces(tok)


def _reasoning(response):
    return response.rsplit("\\boxed", 1)[0]


@pytest.mark.parametrize("task_name", ["arith", "countdown"])
def test_sft_demonstrations_score_no_repetition(task_name):
    """Every style's demonstrations, countdown's long searches included, have repetition ~0 and
    effective length ~ their length. (The 8-gram guard gave countdown's long searches -0.048 on
    average, medium -0.021, so the total reward fell as a correct search got longer.)"""
    rows, tok, pieces = _demos(task_name, 400)
    cfg = RewardConfig()
    styles = {r["style"] for r in rows}
    totals = {}
    for style in styles:
        ids = [tok.encode(_reasoning(r["response"])) for r in rows if r["style"] == style]
        p = score(ids, [True] * len(ids), [True] * len(ids), cfg, cfg.coef, pieces=pieces)
        lens = torch.tensor([len(x) for x in ids], dtype=torch.float32)
        assert abs(p["repetition"].mean()) < 1e-3 and p["repetition"].min() > -0.01, style
        assert torch.all(p["eff_len"] >= 0.98 * lens), style
        totals[style] = p["total"].mean().item()
    if task_name == "countdown":   # correct searches: the longer, the more reward (rlsp pays L)
        assert totals["short"] < totals["medium"] < totals["long"], totals


def _paddings(reason, rng):
    """Padded variants of one reasoning: repeated lines, a block copied in place, the whole
    reasoning copied (also re-indented, re-spaced), a loop of one state, blank lines."""
    lines = reason.rstrip("\n").split("\n")
    body = "\n".join(lines) + "\n"
    tops = [k for k, line in enumerate(lines) if line.startswith("try ")]
    if tops:                      # countdown: a whole top-level try, up to its backtrack
        k = rng.choice(tops)
        j = next((m for m in range(k + 1, len(lines)) if lines[m] == "backtrack"), len(lines) - 1)
    else:                         # arith: two or three lines
        k = rng.randrange(len(lines))
        j = min(len(lines) - 1, k + 2)
    block = "\n".join(lines[k:j + 1]) + "\n"
    tries = [line for line in lines if line.strip().startswith("try ")] or lines
    return body, {
        "last line x5": body + (lines[-1] + "\n") * 5,
        "last line x50": body + (lines[-1] + "\n") * 50,
        "random lines x40": body + "".join(rng.choice(lines).strip() + "\n" for _ in range(40)),
        "block x2 in place": "".join(line + "\n" for line in lines[:j + 1]) + block * 2
                             + "".join(line + "\n" for line in lines[j + 1:]),
        "block x3 at the end": body + block * 3,
        "all x2": body * 2,
        "all x3": body * 3,
        "one state x20": body + (rng.choice(tries) + "\n") * 20,
        "re-indented copy": body + "".join(" " + line + "\n" for line in lines),
        "re-spaced copy": body + "".join(line.replace(" ", "  ") + "  \n" for line in lines),
        "blank lines": body + "\n" * 20 + "    \n" * 20,
    }


@pytest.mark.parametrize("task_name", ["arith", "countdown"])
def test_padding_earns_no_effective_length(task_name):
    """Padding a demonstration adds at most one line of effective length (the first line of a
    copy, when it can pass for a backtrack) and a repetition penalty of about its share of the
    tokens."""
    rows, tok, pieces = _demos(task_name, 300)
    rng = random.Random(0)
    cfg = RewardConfig()
    for r in rows[:60]:
        body, pads = _paddings(_reasoning(r["response"]), rng)
        one_line = max(len(tok.encode(line + "\n")) for line in body.split("\n"))
        ids = [tok.encode(body)] + [tok.encode(p) for p in pads.values()]
        p = score(ids, [True] * len(ids), [True] * len(ids), cfg, cfg.coef, pieces=pieces)
        assert p["repetition"][0] == 0 and p["eff_len"][0] == len(ids[0])
        for k, name in enumerate(pads, 1):
            added = len(ids[k]) - len(ids[0])
            assert p["eff_len"][k] <= p["eff_len"][0] + one_line, (name, body)
            want = -cfg.rep_coef * (added - one_line) / len(ids[k])
            assert p["repetition"][k] <= want + 1e-6, (name, body)


@pytest.mark.parametrize("explore", ["rlsp", "linear", "cosine", "none"])
@pytest.mark.parametrize("task_name", ["arith", "countdown"])
def test_padding_never_out_earns_a_concise_correct_answer(explore, task_name):
    """Real reasoning, padded with repeated lines or whole repeated copies, never earns more
    than the concise correct response under the default settings of each reward."""
    rows, tok, pieces = _demos(task_name, 300)
    rng = random.Random(0)
    cfg = RewardConfig(explore=explore)
    for r in rows[:60]:
        reason = _reasoning(r["response"])
        lines = reason.strip().split("\n")
        pads = [reason + (lines[-1] + "\n") * k for k in (5, 50)]
        pads += [reason * 4, reason + "\n".join(rng.choice(lines) for _ in range(40))]
        ids = [tok.encode(reason)] + [tok.encode(p) for p in pads]
        ok = [True] * len(ids)
        tot = score(ids, ok, ok, cfg, cfg.coef, pieces=pieces)["total"]
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


# -----------------------------------------------------------------------------
# economy terms: worked by hand on groups of 4

from nanorlsp.rewards import adaptive_coefs, economy_terms, easy_rows  # noqa: E402


def econ(kind, lengths, correct, w=0.1, G=4):
    cfg = RewardConfig(economy=kind, economy_coef=w)
    return economy_terms(torch.tensor(lengths), torch.tensor(correct), G, cfg).tolist()


def test_kimi_length_reward_by_hand():
    # group lengths 10, 20, 30, 50: min 10, max 50 -> lambda = 0.5 - (L - 10) / 40
    lam = [0.5, 0.25, 0.0, -0.5]
    got = econ("kimi", [10, 20, 30, 50], [True, True, False, False], w=0.2)
    want = [0.2 * lam[0], 0.2 * lam[1], 0.2 * min(0.0, lam[2]), 0.2 * min(0.0, lam[3])]
    assert got == pytest.approx(want)
    assert econ("kimi", [7, 7, 7, 7], [True, False, True, False]) == [0.0] * 4   # no spread
    # groups are separate: the second group's min/max are its own
    two = econ("kimi", [10, 50, 10, 50, 100, 100, 100, 200], [True] * 8)
    assert two == pytest.approx([0.05, -0.05, 0.05, -0.05, 0.05, 0.05, 0.05, -0.05])


def test_alp_by_hand():
    # solve rate 3/4: price w * 0.75 per token; a group none solved pays max(0, 1/G) = 1/4
    got = econ("alp", [10, 20, 30, 40, 8, 8, 8, 8],
               [True, True, True, False, False, False, False, False], w=0.01)
    assert got == pytest.approx([-0.01 * 0.75 * L for L in (10, 20, 30, 40)] +
                                [-0.01 * 0.25 * 8] * 4)


def test_budget_by_hand():
    # shortest right reply 20: right replies pay w * (L - 20) / L, wrong ones nothing
    got = econ("budget", [20, 40, 10, 80], [True, True, False, True], w=0.2)
    assert got == pytest.approx([0.0, -0.2 * 20 / 40, 0.0, -0.2 * 60 / 80])
    assert econ("budget", [20, 40, 10, 80], [False] * 4) == [0.0] * 4        # nothing solved


def test_economy_in_score_and_adaptive_split():
    """adaptive + an economy term: hard prompts keep the rlsp term, easy ones (group accuracy >=
    threshold) get the economy term instead of the flipped one."""
    ids = [list(range(n)) for n in (10, 30, 20, 40)]          # two groups of 2
    correct = [True, True, False, True]                       # group 1 easy (2/2), group 2 hard
    easy = easy_rows(correct, 2, 0.9)
    assert easy.tolist() == [True, True, False, False]
    cfg = RewardConfig(schedule="adaptive", economy="budget", economy_coef=0.3)
    coefs = adaptive_coefs(correct, 2, cfg.coef, cfg.acc_threshold, easy_coef=0.0)
    assert coefs.tolist() == [0.0, 0.0, 0.5, 0.5]
    r = score(ids, correct, [True] * 4, cfg, coefs, group_size=2, easy=easy)
    assert r["explore"].tolist() == pytest.approx([0.0, 0.0, -0.5 / 20, -0.5 / 40])
    assert r["economy"].tolist() == pytest.approx([0.0, -0.3 * 20 / 30, 0.0, 0.0])
    assert r["total"].tolist() == pytest.approx(
        (r["outcome"] + r["explore"] + r["repetition"] + r["economy"]).tolist())
    # flip (the adaptive schedule's own term): -coef on easy rows, no economy part
    old = adaptive_coefs(correct, 2, 0.5, 0.9)
    assert old.tolist() == [-0.5, -0.5, 0.5, 0.5]
    assert score(ids, correct, [True] * 4, RewardConfig(), old)["economy"].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="group size"):
        score(ids, correct, [True] * 4, RewardConfig(economy="kimi"), 0.5)
    with pytest.raises(ValueError, match="unknown economy"):
        RewardConfig(economy="thrifty")


def test_explore_schedule_latches_threshold_and_splits_adaptive_rows():
    """ExploreSchedule.at: the threshold schedule stays off once the accuracy reached it (and a
    latched run starts off); adaptive gives per-row coefficients (-coef on easy rows with flip,
    0 with an economy term or none, the default) and the easy rows."""
    from nanorlsp.economy import ExploreSchedule
    assert RewardConfig().economy == "none"
    thr = ExploreSchedule(RewardConfig(schedule="threshold", acc_threshold=0.5), 2)
    assert [thr.at(s, acc, [])[0] for s, acc in enumerate((0.2, 0.6, 0.1))] == [0.5, 0.0, 0.0]
    assert thr.latched and ExploreSchedule(thr.cfg, 2, latched=True).at(0, 0.0, [])[0] == 0.0
    correct = [True, True, False, True]                       # group 1 easy, group 2 hard
    for economy, easy_coef in (("flip", -0.5), ("none", 0.0), ("budget", 0.0)):
        ad = ExploreSchedule(RewardConfig(schedule="adaptive", economy=economy), 2)
        coef, rows, easy = ad.at(0, 0.75, correct)
        assert coef == 0.5 and rows.tolist() == [easy_coef] * 2 + [0.5] * 2
        assert easy.tolist() == [True, True, False, False]
    assert ExploreSchedule(RewardConfig(), 2).at(3, 1.0, correct) == (0.5, 0.5, None)


def test_score_texts_grades_and_scores_as_the_step_does():
    """rlsp.score_texts (train_rl.py's scoring, shared with experiments/bench.py and notebook
    04): the checker's verdict, the no-answer test and L from the text before the answer it
    read."""
    from nanorlsp.rlsp import score_texts
    task = get_task("arith")
    p = task.make_problems("train", 1, seed=4, level=4)[0]
    steps = task.make_trace(p, "steps", random.Random(0))
    texts = [steps, f"\\boxed{{{int(p['answer']) + 1}}}", steps.split("\\boxed")[0]]
    cfg = RewardConfig()
    got = score_texts(texts, [p] * 3, task, BYTES, cfg, cfg.coef, pieces=token_pieces(BYTES))
    assert got["correct"] == [True, False, False] and got["has_answer"] == [True, True, False]
    assert got["outcome"].tolist() == [1.0, 0.0, cfg.no_answer_penalty]
    reason = steps[:task.answer_start(steps)]
    assert got["eff_len"][0] == len(reason.encode()) and got["eff_len"][1] == 0  # byte tokens
    want = score([BYTES.encode(reason), [], BYTES.encode(texts[2])], [True, False, False],
                 [True, True, False], cfg, cfg.coef, pieces=token_pieces(BYTES))
    assert got["total"].tolist() == want["total"].tolist()
