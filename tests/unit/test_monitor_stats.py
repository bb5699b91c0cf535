"""The drift statistics against scipy.stats and known distributions, the issue's 0.3σ example,
the decision rule and the minimum sample size."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

from mlrig.core.monitor import stats as drift_stats
from mlrig.core.monitor.stats import Thresholds


def _normal(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n) + shift


@pytest.mark.parametrize("shift", [0.0, 0.03, 0.3])
def test_ks_and_wasserstein_equal_scipy_stats(shift: float) -> None:
    a, b = _normal(1, 5000), _normal(2, 2000, shift)
    statistic, p_value, distance = drift_stats.ks_and_wasserstein(a, b)
    want = stats.ks_2samp(a, b)
    assert statistic == pytest.approx(float(want.statistic), abs=1e-12)
    assert distance == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9)
    # Kolmogorov's limit against ks_2samp's finite-sample distribution: a few percent
    if want.pvalue > 1e-6:
        assert p_value == pytest.approx(float(want.pvalue), rel=0.1)
    else:
        assert p_value < 1e-5


def test_chi_square_and_jensen_shannon_equal_scipy() -> None:
    counts = np.array([30, 50, 20])
    shares = np.array([0.25, 0.5, 0.25])
    expected = shares * counts.sum()
    assert drift_stats.chi_square_p(counts, shares) == pytest.approx(
        float(stats.chisquare(counts, expected).pvalue), rel=1e-9
    )
    p, q = np.array([0.1, 0.6, 0.3]), np.array([0.3, 0.3, 0.4])
    assert drift_stats.jensen_shannon(p, q) == pytest.approx(float(jensenshannon(p, q, base=2)))
    assert drift_stats.jensen_shannon(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 20, 51])
@pytest.mark.parametrize("statistic", [0.0, 0.5, 3.0, 25.0, 400.0])
def test_chi2_sf_equals_scipy(df: int, statistic: float) -> None:
    want = float(special.chdtrc(df, statistic))
    assert drift_stats.chi2_sf(statistic, df) == pytest.approx(want, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("z", [0.0, 0.05, 0.3, 0.8, 0.99, 1.0, 1.5, 3.0, 8.0])
def test_kolmogorov_sf_equals_scipy(z: float) -> None:
    want = float(special.kolmogorov(z))
    assert drift_stats.kolmogorov_sf(z) == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_the_issues_example_a_0_3_sigma_shift_in_one_of_20_features() -> None:
    reference = {f"f{i}": _normal(i, 50_000) for i in range(20)}
    live = {f"f{i}": _normal(100 + i, 10_000, 0.3 if i == 0 else 0.0) for i in range(20)}
    rows = {c.column: c for c in drift_stats.compare(reference, live)}
    shifted = rows["f0"]
    assert shifted.wasserstein == pytest.approx(0.3, abs=0.04)  # the issue measured 0.29
    assert shifted.psi is not None and shifted.psi < Thresholds().psi  # PSI: no major shift
    assert shifted.drifted is True
    assert [c for c, r in rows.items() if r.drifted] == ["f0"]
    assert all(
        r.wasserstein is not None and r.wasserstein < 0.05 for c, r in rows.items() if c != "f0"
    )


def test_identical_samples_have_no_drift_and_disjoint_ones_have_it() -> None:
    a = _normal(3, 1000)
    (same,) = drift_stats.compare({"x": a}, {"x": a.copy()})
    assert same.drifted is False and same.ks == 0 and same.wasserstein == 0
    (far,) = drift_stats.compare({"x": a}, {"x": a + 10})
    assert far.drifted is True and far.ks == 1.0 and far.wasserstein == pytest.approx(10 / a.std())


def test_a_small_window_is_not_judged_and_says_why() -> None:
    (row,) = drift_stats.compare({"x": _normal(4, 5000)}, {"x": _normal(5, 50, 3.0)})
    assert row.drifted is None
    assert row.note == "50 rows, fewer than 200: not judged"
    (row,) = drift_stats.compare(
        {"x": _normal(4, 5000)}, {"x": _normal(5, 50, 3.0)}, Thresholds(min_samples=20)
    )
    assert row.drifted is True


def test_a_large_window_with_a_tiny_shift_is_significant_but_not_drift() -> None:
    """KS alone flags 0.05σ on 50k vs 50k; the effect-size gate does not."""
    (row,) = drift_stats.compare({"x": _normal(6, 50_000)}, {"x": _normal(7, 50_000, 0.05)})
    assert row.ks_p is not None and row.ks_p < 0.001
    assert row.drifted is False


def test_categorical_columns_use_chi_square_and_jensen_shannon() -> None:
    rng = np.random.default_rng(8)
    ref = rng.choice(["a", "b", "c"], size=5000, p=[0.5, 0.3, 0.2])
    same = rng.choice(["a", "b", "c"], size=2000, p=[0.5, 0.3, 0.2])
    moved = rng.choice(["a", "b", "c", "d"], size=2000, p=[0.2, 0.3, 0.2, 0.3])
    (ok,) = drift_stats.compare({"k": ref}, {"k": same})
    (bad,) = drift_stats.compare({"k": ref}, {"k": moved})
    assert ok.kind == "categorical" and ok.drifted is False and ok.chi2_p is not None
    assert bad.drifted is True and bad.jensen_shannon is not None and bad.jensen_shannon > 0.2
    ints = drift_stats.kind_of(np.array([0, 1, 1, 0]))
    assert ints == "categorical" and drift_stats.kind_of(np.arange(1000)) == "numeric"


def test_nulls_are_left_out_and_a_constant_reference_does_not_divide_by_zero() -> None:
    live = _normal(9, 500)
    live[:100] = np.nan
    (row,) = drift_stats.compare({"x": _normal(10, 1000)}, {"x": live})
    assert row.n_live == 400
    (flat,) = drift_stats.compare({"x": np.ones(500)}, {"x": np.ones(500)})
    assert flat.drifted is False and flat.wasserstein == 0.0


def test_histogram_shares_sum_to_one_on_shared_bins() -> None:
    labels, ref, live = drift_stats.histogram(_normal(11, 1000), _normal(12, 500, 1.0), "numeric")
    assert len(labels) == len(ref) == len(live) == 20
    assert sum(ref) == pytest.approx(1.0) and sum(live) == pytest.approx(1.0)
    labels, ref, live = drift_stats.histogram(
        np.array(["a", "b"]), np.array(["b", "c"]), "categorical"
    )
    assert labels == ["a", "b", "c"] and ref == [0.5, 0.5, 0.0] and live == [0.0, 0.5, 0.5]
