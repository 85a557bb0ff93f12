"""nanorlsp.tooling.stats: bootstrap intervals over problems and seeds, paired comparisons."""
import numpy as np
import pytest

from nanorlsp.tooling.stats import bootstrap_ci, paired_ci, significant


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    # 300 held-out sets of 200 problems, each solved with probability 0.7: the 95% interval of
    # the measured accuracy should hold 0.7 in about 95% of them (percentile bootstrap: a bit
    # under at this N)
    rng = np.random.default_rng(0)
    hits = 0
    for k in range(300):
        x = (rng.random(200) < 0.7).astype(float)
        m, lo, hi = bootstrap_ci(x, n_boot=500, seed=k)
        assert lo <= m <= hi
        hits += lo <= 0.7 <= hi
    assert 0.90 <= hits / 300 <= 0.99, hits


def test_interval_width_follows_the_binomial_standard_error():
    rng = np.random.default_rng(1)
    x = (rng.random(2000) < 0.5).astype(float)
    _, lo, hi = bootstrap_ci(x, n_boot=2000)
    se = np.sqrt(0.25 / 2000)
    assert abs((hi - lo) - 2 * 1.96 * se) < 0.25 * 2 * 1.96 * se


def test_seeds_widen_the_interval():
    # three seeds that disagree (75%, 85%, 95% on the same 400 problems): the two-level
    # bootstrap is wider than one that pools them as 1200 independent problems
    rng = np.random.default_rng(2)
    u = rng.random(400)
    seeds = np.stack([(u < p).astype(float) for p in (0.75, 0.85, 0.95)])
    _, lo, hi = bootstrap_ci(seeds)
    _, plo, phi = bootstrap_ci(seeds.reshape(-1))
    assert hi - lo > 1.5 * (phi - plo)


def test_paired_comparison_of_identical_runs_is_exactly_zero():
    x = (np.random.default_rng(3).random(300) < 0.6).astype(float)
    assert paired_ci(x, x) == (0.0, 0.0, 0.0)
    assert not significant(0.0, 0.0)


def test_pairing_cancels_the_shared_problems():
    # b differs from a on 12 of 500 problems, all in a's favour: +2.4 points. Separately the two
    # intervals overlap; paired, the difference's interval excludes 0
    rng = np.random.default_rng(4)
    a = (rng.random(500) < 0.8).astype(float)
    b = a.copy()
    b[np.flatnonzero(a)[:12]] = 0.0
    d, lo, hi = paired_ci(a, b)
    assert d == pytest.approx(12 / 500) and significant(lo, hi) and lo > 0
    _, alo, ahi = bootstrap_ci(a)
    _, blo, bhi = bootstrap_ci(b)
    assert alo < bhi                                  # unpaired: the intervals overlap
    assert hi - lo < 0.5 * (ahi - alo)


def test_a_noise_level_gap_is_not_called():
    rng = np.random.default_rng(5)
    a = (rng.random(500) < 0.80).astype(float)
    b = (rng.random(500) < 0.80).astype(float)     # the same skill, another draw of luck
    d, lo, hi = paired_ci(a, b)
    assert lo < d < hi and not significant(lo, hi)


def test_deterministic_and_checked():
    x = np.random.default_rng(6).random((3, 50))
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert paired_ci(x, x[::-1], seed=7) == paired_ci(x, x[::-1], seed=7)
    with pytest.raises(ValueError, match="same problems"):
        paired_ci(x, x[:, :10])
    with pytest.raises(ValueError, match="shape"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])
