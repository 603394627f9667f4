"""One colour per source, the same in every figure, so a reader learns it once."""

from __future__ import annotations

SOURCE_COLORS = {"pymc": "#2166ac", "numpyro": "#e08214", "stan": "#b2182b", "exact": "#222222"}
FALLBACK_COLORS = ("#1b7837", "#762a83", "#35978f", "#8c510a", "#c51b7d", "#4d4d4d")


def color(source: str) -> str:
    """A backend's colour; a column with an engine (``stan:pystan``) or any other source
    gets a fallback colour picked by its name."""
    if source in SOURCE_COLORS:
        return SOURCE_COLORS[source]
    return FALLBACK_COLORS[sum(map(ord, source)) % len(FALLBACK_COLORS)]


#: One colour per approximation method, for the report's scorecard figure.
METHOD_COLORS = {"advi": "#1b7837", "fullrank": "#762a83", "pathfinder": "#e08214"}


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method, FALLBACK_COLORS[sum(map(ord, method)) % len(FALLBACK_COLORS)])
