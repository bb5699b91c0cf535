"""Drift statistics, pure numpy/scipy: a reference sample against a live window, per column.

Numeric columns: PSI on ten quantile bins of the reference, the two-sample Kolmogorov-Smirnov
test, and the Wasserstein distance divided by the reference's standard deviation ("normed":
in units of σ, so one threshold fits every feature). Categorical columns: the chi-square test
of the live counts against the reference's shares, and the Jensen-Shannon distance (base 2,
0 = same, 1 = disjoint).

The formulas are scipy.stats' own (ks_2samp, wasserstein_distance, chisquare,
jensenshannon), computed from one sort per column with the p-values from scipy.special
(importing scipy.stats alone costs about a second, a third of the command's budget). The KS
p-value is Kolmogorov's limiting distribution, which ks_2samp's finite-sample one approaches
as the samples grow (within a few percent from a few hundred rows on). The unit tests hold
each one to scipy.stats.

The decision (docs/monitor.md says why): a numeric column drifts when its normed Wasserstein
distance is at least `wasserstein` (0.1 σ) AND the KS test rejects "same distribution" at
`alpha` divided by the number of columns tested (Bonferroni); a categorical one when its
Jensen-Shannon distance is at least `jensen_shannon` (0.1) AND the chi-square test rejects at
the same corrected level. The effect size keeps large windows from flagging shifts too small
to matter; the corrected test keeps small windows from flagging noise. Below `min_samples`
live rows a column is not judged at all.
"""

from __future__ import annotations

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


def psi(reference: np.ndarray, live: np.ndarray, bins: int = BINS) -> float:
    """Population stability index on the reference's quantile bins (ties merged)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    size = len(edges) + 1
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=size)
    live_counts = np.bincount(np.searchsorted(edges, live, side="right"), minlength=size)
    return _psi_of_shares(ref_counts / len(reference), live_counts / len(live))


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


def chi_square_p(live_counts: np.ndarray, ref_share: np.ndarray) -> float:
    """p-value of Pearson's chi-square test of the live counts against the reference's shares
    (scipy.stats.chisquare). Shares are floored at EPS so a category the reference never saw
    counts heavily instead of dividing by zero."""
    from scipy import special

    if len(live_counts) < 2:
        return 1.0
    expected = np.maximum(ref_share, EPS)
    expected = expected / expected.sum() * live_counts.sum()
    statistic = float(np.sum((live_counts - expected) ** 2 / expected))
    return float(special.chdtrc(len(live_counts) - 1, statistic))


def ks_and_wasserstein(reference: np.ndarray, live: np.ndarray) -> tuple[float, float, float]:
    """(KS statistic, its two-sided asymptotic p-value, Wasserstein-1 distance) from the two
    empirical CDFs on the pooled sorted values: scipy.stats.ks_2samp and
    scipy.stats.wasserstein_distance in one pass."""
    from scipy import special

    ref, now = np.sort(reference), np.sort(live)
    pooled = np.sort(np.concatenate([ref, now]))
    cdf_ref = np.searchsorted(ref, pooled, side="right") / len(ref)
    cdf_now = np.searchsorted(now, pooled, side="right") / len(now)
    gaps = np.abs(cdf_ref - cdf_now)
    statistic = float(np.max(gaps))
    distance = float(np.sum(gaps[:-1] * np.diff(pooled)))
    n, m = len(ref), len(now)
    p_value = float(np.clip(special.kolmogorov(np.sqrt(n * m / (n + m)) * statistic), 0.0, 1.0))
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
    statistic, p_value, distance = ks_and_wasserstein(reference, live)
    scale = float(np.std(reference))
    w = _normed(distance, scale)
    shift = float((np.mean(live) - np.mean(reference)) / scale) if scale else 0.0
    return ColumnDrift(
        column=name,
        kind="numeric",
        n_reference=len(reference),
        n_live=len(live),
        drifted=bool(w >= t.wasserstein and p_value < level),
        psi=psi(reference, live),
        ks=statistic,
        ks_p=p_value,
        wasserstein=w,
        mean_shift=shift,
    )


def _categorical(
    name: str, reference: np.ndarray, live: np.ndarray, level: float, t: Thresholds
) -> ColumnDrift:
    ref_text, live_text = reference.astype(str), live.astype(str)
    categories, codes = np.unique(np.concatenate([ref_text, live_text]), return_inverse=True)
    ref_counts = np.bincount(codes[: len(ref_text)], minlength=len(categories))
    live_counts = np.bincount(codes[len(ref_text) :], minlength=len(categories))
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
        labels = sorted(set(ref.astype(str)) | set(now.astype(str)))[:MAX_CATEGORIES]
        ref_s = [float(np.mean(ref.astype(str) == label)) if len(ref) else 0.0 for label in labels]
        now_s = [float(np.mean(now.astype(str) == label)) if len(now) else 0.0 for label in labels]
        return labels, ref_s, now_s
    ref, now = ref.astype(float), now.astype(float)
    both = np.concatenate([ref, now]) if len(now) else ref
    lo, hi = float(np.min(both)), float(np.max(both))
    if hi == lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    ref_h = np.histogram(ref, edges)[0] / max(len(ref), 1)
    now_h = np.histogram(now, edges)[0] / max(len(now), 1)
    return [f"{e:.4g}" for e in edges[:-1]], ref_h.tolist(), now_h.tolist()
