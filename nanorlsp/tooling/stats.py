"""
Honest statistics for small studies: bootstrap confidence intervals over problems and seeds,
and paired comparisons of two configs on the same problems.

    scores = [[1, 0, 1, ...], [1, 1, 0, ...]]       # (S seeds, N problems): 0/1 or any score
    mean, lo, hi = bootstrap_ci(scores)              # 95% percentile interval of the mean
    d, lo, hi = paired_ci(scores_a, scores_b)        # mean(a) - mean(b), same N problems
    significant(lo, hi)                              # True when the interval excludes 0

Why a bootstrap over problems: a held-out set of 500 problems is one draw of the task's
problems, so a 1-point gap can be that draw's luck; resampling problems with replacement
measures it (Efron & Tibshirani 1993, ch. 13, the percentile interval). With several seeds the
resampling is two-level: draw S seeds with replacement, then N problems with replacement (the
same problems for every drawn seed, since every seed was evaluated on the same set), so both the
training noise (seeds) and the test-set noise (problems) widen the interval. A paired comparison
resamples the *same* problem indices for both configs: a problem that is easy for both cancels,
which is why a paired interval is narrower than two separate ones (the configs' seeds are
independent runs, so seeds are drawn separately for each).
"""
import numpy as np


def _as_2d(scores) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]                                         # one seed
    if x.ndim != 2 or x.shape[1] == 0 or x.shape[0] == 0:
        raise ValueError(f"scores must be (seeds, problems) with both > 0, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite")
    return x


def _boot_means(x: np.ndarray, idx_p: np.ndarray, rng) -> np.ndarray:
    """(n_boot,) means of x (S, N) over resampled seeds (drawn here) and the problem indices
    idx_p (n_boot, N)."""
    S = x.shape[0]
    idx_s = rng.integers(0, S, size=(idx_p.shape[0], S))                 # (n_boot, S)
    picked = np.take_along_axis(x[idx_s], idx_p[:, None, :], axis=2)     # (n_boot, S, N)
    return picked.mean(axis=(1, 2))


def bootstrap_ci(scores, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0):
    """(mean, lo, hi): the mean of scores (S, N) or (N,) and its 1 - alpha percentile interval."""
    x = _as_2d(scores)
    rng = np.random.default_rng(seed)
    idx_p = rng.integers(0, x.shape[1], size=(n_boot, x.shape[1]))
    m = _boot_means(x, idx_p, rng)
    lo, hi = np.quantile(m, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(lo), float(hi)


def paired_ci(a, b, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0):
    """(mean(a) - mean(b), lo, hi) for two configs scored on the same N problems (a: (Sa, N),
    b: (Sb, N)): every bootstrap draw uses the same problem indices for both."""
    xa, xb = _as_2d(a), _as_2d(b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"a paired comparison needs the same problems: {xa.shape[1]} vs "
                         f"{xb.shape[1]}")
    rng = np.random.default_rng(seed)
    idx_p = rng.integers(0, xa.shape[1], size=(n_boot, xa.shape[1]))
    d = _boot_means(xa, idx_p, rng) - _boot_means(xb, idx_p, rng)
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    return float(xa.mean() - xb.mean()), float(lo), float(hi)


def significant(lo: float, hi: float) -> bool:
    """A difference is called only when its interval excludes 0."""
    return lo > 0 or hi < 0
