"""Student t quantile and tail from scipy.special: the summary of every run needs them, and importing
scipy.stats for them alone would add seconds to every run's start-up (docs/architecture.md)."""

from __future__ import annotations


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (scipy.stats.t.ppf)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (scipy.stats.t.sf)."""
    from scipy.special import stdtr

    return float(stdtr(df, -t))
