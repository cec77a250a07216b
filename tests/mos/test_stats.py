"""Confidence intervals and the order design against hand-computed values."""

from __future__ import annotations

from collections import Counter

import pytest

from nerfvc.mos.manifest import Trial, plan_raters, williams_rows
from nerfvc.mos.stats import mean_ci, wilson


def test_wilson_interval_by_hand():
    # 7 of 10, z = 1.959964: centre (0.7 + 0.192073) / 1.384146 = 0.644493,
    # half 1.959964 / 1.384146 * sqrt(0.021 + 0.00960366) = 0.247716
    lo, hi = wilson(7, 10)
    assert lo == pytest.approx(0.396777, abs=1e-5) and hi == pytest.approx(0.892209, abs=1e-5)
    lo, hi = wilson(0, 5)  # 0 of 5: [0, z²/(n + z²)] = [0, 3.841459 / 8.841459]
    assert lo == 0 and hi == pytest.approx(0.434482, abs=1e-5)
    assert wilson(5, 5)[1] == 1 and wilson(0, 0) == (0.0, 1.0)


def test_mean_ci_by_hand():
    # scores 5 4 4 3 5: mean 4.2, sd sqrt(2.8 / 4) = 0.836660, t(0.975, 4) = 2.776445 → half 1.038848
    mean, lo, hi = mean_ci([5, 4, 4, 3, 5])
    assert mean == pytest.approx(4.2) and lo == pytest.approx(3.161152, abs=1e-5)
    assert hi == pytest.approx(5.238848, abs=1e-5)
    assert mean_ci([4, 4]) == (4.0, 4.0, 4.0) and mean_ci([3]) == (3.0, None, None)
    assert mean_ci([]) == (None, None, None)


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_williams_rows_balance_position_and_carry_over(n):
    rows = williams_rows(n)
    assert len(rows) == (n if n % 2 == 0 else 2 * n)
    for r in rows:
        assert sorted(r) == list(range(n))
    for pos in range(n):  # every item equally often at every position
        assert set(Counter(r[pos] for r in rows).values()) == {len(rows) // n}
    follows = Counter((r[i], r[i + 1]) for r in rows for i in range(n - 1))
    assert len(follows) == n * (n - 1) and len(set(follows.values())) <= 1  # each ordered pair equally often


def test_rater_plans_are_seeded_and_balanced():
    trials = {f"a{i}": Trial(f"a{i}", "acr", (f"s{i}",)) for i in range(4)}
    trials |= {f"p{i}": Trial(f"p{i}", "pair", ("s0", f"s{i + 1}"), "matched") for i in range(3)}
    plans = plan_raters(trials, 6, seed=3)
    assert plans == plan_raters(trials, 6, seed=3) and plans != plan_raters(trials, 6, seed=4)
    for p in plans:  # ACR block first, then the pairs
        assert [t[0] for t in p.order] == ["a"] * 4 + ["p"] * 3
    assert len({p.order for p in plans[:4]}) == 4  # 4 ACR trials: 4 distinct Williams rows
    for pos in range(4):  # over 4 raters each ACR trial is once at each position
        assert sorted(p.order[pos] for p in plans[:4]) == sorted(k for k in trials if k[0] == "a")
    for t in ("p0", "p1", "p2"):  # nerfvc shown second to half of the raters
        assert sum(t in p.nerfvc_second for p in plans) == 3
    ab = plans[1].stimuli_ab(trials["p0"])
    assert ab == (("s1", "s0") if "p0" in plans[1].nerfvc_second else ("s0", "s1"))
