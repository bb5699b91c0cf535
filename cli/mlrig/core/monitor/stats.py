"""Drift statistics in numpy alone: a reference sample against a live window, per column.

Numeric columns: PSI on ten quantile bins of the reference, the two-sample Kolmogorov-Smirnov
test, and the Wasserstein distance divided by the reference's standard deviation ("normed":
in units of σ, so one threshold fits every feature). Categorical columns: the chi-square test
of the live counts against the reference's shares, and the Jensen-Shannon distance (base 2,
0 = same, 1 = disjoint).

The formulas are scipy's (stats.ks_2samp, stats.wasserstein_distance, stats.chisquare,
spatial.distance.jensenshannon, special.kolmogorov, special.chdtrc), written out over one
stable sort per numeric column: importing scipy.stats costs about a second here and
scipy.special a third of one, a large share of the command's 3 s budget. The KS p-value is
Kolmogorov's limiting distribution, which ks_2samp's finite-sample one approaches as the
samples grow (within a few percent from a few hundred rows on). The unit tests hold each one
to scipy.

The decision (docs/monitor.md says why): a numeric column drifts when its normed Wasserstein
distance is at least `wasserstein` (0.1 σ) AND the KS test rejects "same distribution" at
`alpha` divided by the number of columns tested (Bonferroni); a categorical one when its
Jensen-Shannon distance is at least `jensen_shannon` (0.1) AND the chi-square test rejects at
the same corrected level. The effect size keeps large windows from flagging shifts too small
to matter; the corrected test keeps small windows from flagging noise. Below `min_samples`
live rows a column is not judged at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Kind = Literal["numeric", "categorical"]
BINS = 10
EPS = 1e-4  # a bin's share floor in PSI (an empty bin would make it infinite)
MAX_CATEGORIES = 20  # an integer column with at most this many values is categorical


@dataclass(frozen=True)
class Thresholds:
    """The default decision; every field can be set per call (and per repo, later)."""

    wasserstein: float = 0.1  # normed: in units of the reference's σ
    jensen_shannon: float = 0.1
    alpha: float = 0.05  # family-wise, split over the columns tested (Bonferroni)
    min_samples: int = 200  # live rows below which a column is not judged
    psi: float = 0.2  # reported beside the decision (the industry's "major shift" line)


@dataclass(frozen=True)
class ColumnDrift:
    """One column's statistics and verdict. drifted is None when there were too few rows."""

    column: str
    kind: Kind
    n_reference: int
    n_live: int
    drifted: bool | None
    psi: float | None = None
    ks: float | None = None  # the KS statistic (largest gap between the two CDFs)
    ks_p: float | None = None
    wasserstein: float | None = None  # normed
    chi2_p: float | None = None
    jensen_shannon: float | None = None
    mean_shift: float | None = None  # (live mean - reference mean) / reference σ
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The numbers worth plotting over time, by name (None left out)."""
        names = ("psi", "ks", "ks_p", "wasserstein", "chi2_p", "jensen_shannon", "mean_shift")
        found = {n: getattr(self, n) for n in names}
        return {n: float(v) for n, v in found.items() if v is not None}


def kind_of(values: np.ndarray) -> Kind:
    """numeric for floats and many-valued integers; categorical for the rest."""
    if values.dtype.kind == "f":
        return "numeric"
    if values.dtype.kind in "iu":
        return "categorical" if len(np.unique(values)) <= MAX_CATEGORIES else "numeric"
    if values.dtype.kind == "b":
        return "categorical"
    return "categorical"


def _edges(sorted_ref: np.ndarray, bins: int) -> np.ndarray:
    """The reference's inner quantiles (numpy's linear rule) from its sorted values, ties merged."""
    n = len(sorted_ref)
    at = np.linspace(0, 1, bins + 1)[1:-1] * (n - 1)
    low = np.floor(at).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    frac = at - low
    return np.unique(sorted_ref[low] + (sorted_ref[high] - sorted_ref[low]) * frac)


def _bin_shares(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values in each bin (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    cuts = np.searchsorted(sorted_values, edges, side="left")
    counts = np.diff(np.concatenate([[0], cuts, [len(sorted_values)]]))
    return counts / len(sorted_values)


def psi(reference: np.ndarray, live: np.ndarray, bins: int = BINS) -> float:
    """Population stability index on the reference's quantile bins (ties merged)."""
    ref, now = np.sort(reference), np.sort(live)
    edges = _edges(ref, bins)
    return _psi_of_shares(_bin_shares(ref, edges), _bin_shares(now, edges))


def _psi_of_shares(ref_share: np.ndarray, live_share: np.ndarray) -> float:
    ref, now = np.maximum(ref_share, EPS), np.maximum(live_share, EPS)
    return float(np.sum((now - ref) * np.log(now / ref)))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2 (scipy.spatial.distance.jensenshannon)."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        inside = a > 0
        return float(np.sum(a[inside] * np.log2(a[inside] / m[inside])))

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def chi2_sf(statistic: float, df: int) -> float:
    """P(X > statistic) for X ~ chi-square(df) (scipy.special.chdtrc): the regularised upper
    gamma Q(df/2, statistic/2) in closed form, Q(1, y) = e^-y and Q(1/2, y) = erfc(sqrt y),
    raised by Q(a + 1, y) = Q(a, y) + y^a e^-y / Gamma(a + 1)."""
    y = statistic / 2
    if df < 1:
        return float("nan")
    if y <= 0:
        return 1.0
    if df % 2 == 0:
        i = np.arange(df // 2)
        total = float(np.sum(np.exp(i * math.log(y) - y - _lgamma(i + 1.0))))
    else:
        j = np.arange((df - 1) // 2)
        terms = np.exp((j + 0.5) * math.log(y) - y - _lgamma(j + 1.5))
        total = math.erfc(math.sqrt(y)) + float(np.sum(terms))
    return min(max(total, 0.0), 1.0)


def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(v) for v in x.tolist()], dtype=float)


def kolmogorov_sf(z: float) -> float:
    """P(K > z) of Kolmogorov's limiting distribution (scipy.special.kolmogorov): the
    alternating series 2 sum (-1)^(k-1) exp(-2 k^2 z^2), or for z < 1, where that converges
    slowly, one minus Jacobi's form sqrt(2 pi)/z sum exp(-(2k-1)^2 pi^2 / (8 z^2))."""
    if z <= 0:
        return 1.0
    if z < 1.0:
        k = np.arange(1, 10)
        cdf = (
            math.sqrt(2 * math.pi)
            / z
            * np.sum(np.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * z * z)))
        )
        return min(max(1.0 - float(cdf), 0.0), 1.0)
    k = np.arange(1, 101)
    return min(max(float(2 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k * k * z * z))), 0.0), 1.0)


def chi_square_p(live_counts: np.ndarray, ref_share: np.ndarray) -> float:
    """p-value of Pearson's chi-square test of the live counts against the reference's shares
    (scipy.stats.chisquare). Shares are floored at EPS so a category the reference never saw
    counts heavily instead of dividing by zero."""
    if len(live_counts) < 2:
        return 1.0
    expected = np.maximum(ref_share, EPS)
    expected = expected / expected.sum() * live_counts.sum()
    statistic = float(np.sum((live_counts - expected) ** 2 / expected))
    return chi2_sf(statistic, len(live_counts) - 1)


@dataclass(frozen=True)
class _Sorted:
    """One numeric column's two samples after one stable argsort of both together."""

    pooled: np.ndarray
    from_ref: np.ndarray  # bool per pooled value

    @classmethod
    def of(cls, reference: np.ndarray, live: np.ndarray) -> _Sorted:
        both = np.concatenate([reference, live])
        order = np.argsort(both, kind="stable")
        return cls(both[order], order < len(reference))

    @property
    def reference(self) -> np.ndarray:
        return self.pooled[self.from_ref]

    @property
    def live(self) -> np.ndarray:
        return self.pooled[~self.from_ref]


def ks_and_wasserstein(reference: np.ndarray, live: np.ndarray) -> tuple[float, float, float]:
    """(KS statistic, its two-sided asymptotic p-value, Wasserstein-1 distance) from the two
    empirical CDFs on the pooled sorted values: scipy.stats.ks_2samp and
    scipy.stats.wasserstein_distance in one pass."""
    return _ks_and_wasserstein(_Sorted.of(reference, live))


def _ks_and_wasserstein(s: _Sorted) -> tuple[float, float, float]:
    n = int(np.count_nonzero(s.from_ref))
    m = len(s.pooled) - n
    cdf_ref = np.cumsum(s.from_ref) / n
    cdf_now = np.cumsum(~s.from_ref) / m
    gaps = np.abs(cdf_ref - cdf_now)
    # the CDFs are read after the last of each run of equal values (ties count together)
    last = np.ones(len(s.pooled), dtype=bool)
    last[:-1] = s.pooled[1:] != s.pooled[:-1]
    statistic = float(np.max(gaps[last]))
    distance = float(np.sum(gaps[:-1] * np.diff(s.pooled)))  # a tie's width is 0
    p_value = kolmogorov_sf(math.sqrt(n * m / (n + m)) * statistic)
    return statistic, p_value, distance


def normed_wasserstein(reference: np.ndarray, live: np.ndarray) -> float:
    """Wasserstein-1 distance in units of the reference's standard deviation."""
    return _normed(ks_and_wasserstein(reference, live)[2], float(np.std(reference)))


def _normed(distance: float, scale: float) -> float:
    if scale == 0.0:
        return 0.0 if distance == 0.0 else float("inf")
    return distance / scale


def _numeric(
    name: str, reference: np.ndarray, live: np.ndarray, level: float, t: Thresholds
) -> ColumnDrift:
    both = _Sorted.of(reference, live)
    statistic, p_value, distance = _ks_and_wasserstein(both)
    scale = float(np.std(reference))
    w = _normed(distance, scale)
    shift = float((np.mean(live) - np.mean(reference)) / scale) if scale else 0.0
    ref_sorted, live_sorted = both.reference, both.live
    edges = _edges(ref_sorted, BINS)
    return ColumnDrift(
        column=name,
        kind="numeric",
        n_reference=len(reference),
        n_live=len(live),
        drifted=bool(w >= t.wasserstein and p_value < level),
        psi=_psi_of_shares(_bin_shares(ref_sorted, edges), _bin_shares(live_sorted, edges)),
        ks=statistic,
        ks_p=p_value,
        wasserstein=w,
        mean_shift=shift,
    )


def _codes(reference: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(categories, reference counts, live counts): integers compared as integers, the rest
    as text."""
    if reference.dtype.kind in "iub" and live.dtype.kind in "iub":
        ref_v, live_v = reference.astype(np.int64), live.astype(np.int64)
    else:
        ref_v, live_v = reference.astype(str), live.astype(str)
    categories, codes = np.unique(np.concatenate([ref_v, live_v]), return_inverse=True)
    ref_counts = np.bincount(codes[: len(ref_v)], minlength=len(categories))
    live_counts = np.bincount(codes[len(ref_v) :], minlength=len(categories))
    return categories, ref_counts, live_counts


def _categorical(
    name: str, reference: np.ndarray, live: np.ndarray, level: float, t: Thresholds
) -> ColumnDrift:
    _, ref_counts, live_counts = _codes(reference, live)
    ref_share = ref_counts / ref_counts.sum()
    live_share = live_counts / live_counts.sum()
    js = jensen_shannon(ref_share, live_share)
    chi2_p = chi_square_p(live_counts, ref_share)
    return ColumnDrift(
        column=name,
        kind="categorical",
        n_reference=len(reference),
        n_live=len(live),
        drifted=bool(js >= t.jensen_shannon and chi2_p < level),
        psi=_psi_of_shares(ref_share, live_share),
        chi2_p=chi2_p,
        jensen_shannon=js,
    )


def _present(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return values[~np.isnan(values)]
    if values.dtype.kind == "O":
        return values[np.array([v is not None for v in values], dtype=bool)]
    return values


def compare(
    reference: Mapping[str, np.ndarray],
    live: Mapping[str, np.ndarray],
    thresholds: Thresholds | None = None,
    kinds: Mapping[str, Kind] | None = None,
) -> list[ColumnDrift]:
    """One ColumnDrift per column both sides hold, in the reference's column order. A column
    with fewer than min_samples live values (nulls aside) is reported, not judged."""
    t = thresholds or Thresholds()
    columns = [c for c in reference if c in live]
    level = t.alpha / max(len(columns), 1)
    out: list[ColumnDrift] = []
    for name in columns:
        ref, now = _present(np.asarray(reference[name])), _present(np.asarray(live[name]))
        kind = (kinds or {}).get(name) or kind_of(ref)
        if len(now) < t.min_samples or len(ref) < t.min_samples:
            out.append(
                ColumnDrift(
                    name,
                    kind,
                    len(ref),
                    len(now),
                    None,
                    note=f"{min(len(now), len(ref))} rows, fewer than {t.min_samples}: not judged",
                )
            )
            continue
        if kind == "numeric":
            out.append(_numeric(name, ref.astype(float), now.astype(float), level, t))
        else:
            out.append(_categorical(name, ref, now, level, t))
    return out


def histogram(
    reference: np.ndarray, live: np.ndarray, kind: Kind, bins: int = 20
) -> tuple[list[str], list[float], list[float]]:
    """(bin labels, reference shares, live shares) on shared bins: what the report draws."""
    ref, now = _present(np.asarray(reference)), _present(np.asarray(live))
    if kind == "categorical":
        categories, ref_counts, live_counts = _codes(ref, now)
        keep = slice(0, MAX_CATEGORIES)
        ref_s = ref_counts[keep] / max(len(ref), 1)
        now_s = live_counts[keep] / max(len(now), 1)
        return [str(c) for c in categories[keep]], ref_s.tolist(), now_s.tolist()
    ref, now = ref.astype(float), now.astype(float)
    both = np.concatenate([ref, now]) if len(now) else ref
    lo, hi = float(np.min(both)), float(np.max(both))
    if hi == lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    ref_h = np.histogram(ref, edges)[0] / max(len(ref), 1)
    now_h = np.histogram(now, edges)[0] / max(len(now), 1)
    return [f"{e:.4g}" for e in edges[:-1]], ref_h.tolist(), now_h.tolist()
