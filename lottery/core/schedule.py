"""Sparsity schedules: the target density of every level, as a closed-form function of the level.

    fraction    prune a fixed fraction f of the remaining weights per level:  d_L = (1 - f)^L  (per-layer f allowed)
    densities   an explicit, strictly decreasing list of densities:           d_L = densities[L - 1]
    geometric   reach a target density d in N levels:  f = 1 - d^(1/N),      d_L = (1 - f)^L
    oneshot     one pruning step straight to a target density:               d_1 = target

A schedule other than `fraction` fixes the number of levels (len(densities), N, or 1); `levels` may then ask for fewer
(a prefix) but never more. Targets are densities (the share of prunable weights kept), so they never compound rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

KINDS = ("fraction", "densities", "geometric", "oneshot")
DEFAULT_LEVELS = 10  # for `fraction` schedules, which could go on forever


class PruningConfigError(ValueError):
    """A pruning setting that cannot be honoured (bad fraction or schedule, unknown layer, contradictory options);
    the message names the setting and the fix."""


def check_fraction(value: float, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
        raise PruningConfigError(
            f"{what}={value!r} is not a fraction in (0, 1): it is the share of the *remaining* weights pruned per "
            "level, e.g. 0.2"
        )
    return float(value)


def _unit_interval(value: object, what: str, closed_top: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (0.0 < float(value) < 1.0 or (closed_top and float(value) == 1.0)):
        top = "]" if closed_top else ")"
        raise PruningConfigError(f"{what}={value!r} must lie in (0, 1{top}")
    return float(value)


@dataclass(frozen=True)
class SparsitySchedule:
    kind: str = "fraction"
    fraction: float = 0.2
    densities: tuple[float, ...] = field(default_factory=tuple)
    target: float | None = None
    over_levels: int | None = None

    @classmethod
    def build(
        cls,
        kind: str,
        fraction: float = 0.2,
        densities: Sequence[float] = (),
        target: float | None = None,
        over_levels: int | None = None,
    ) -> SparsitySchedule:
        if kind not in KINDS:
            raise PruningConfigError(f"pruning.schedule={kind!r} is not one of {KINDS}")
        densities = tuple(densities)
        if kind != "densities" and densities:
            raise PruningConfigError(
                f"pruning.densities={list(densities)} is only read by pruning.schedule=densities (got {kind!r})"
            )
        if kind in ("fraction", "densities") and (target is not None or over_levels is not None):
            raise PruningConfigError(
                f"pruning.target_density / pruning.over_levels are read by geometric and oneshot schedules, "
                f"not by pruning.schedule={kind!r}"
            )
        if kind == "fraction":
            check_fraction(fraction, "pruning.fraction")
        elif kind == "densities":
            if not densities:
                raise PruningConfigError("pruning.schedule=densities needs pruning.densities, e.g. [0.8, 0.5, 0.2]")
            for i, d in enumerate(densities):
                _unit_interval(d, f"pruning.densities[{i}]", closed_top=True)
            if any(b >= a for a, b in zip(densities, densities[1:], strict=False)):
                raise PruningConfigError(
                    f"pruning.densities={list(densities)} must be strictly decreasing: each level prunes further"
                )
        else:
            if target is None:
                raise PruningConfigError(f"pruning.schedule={kind} needs pruning.target_density, e.g. 0.01")
            _unit_interval(target, "pruning.target_density")
            if kind == "geometric":
                if not isinstance(over_levels, int) or isinstance(over_levels, bool) or over_levels < 1:
                    raise PruningConfigError(
                        f"pruning.over_levels={over_levels!r}: a geometric schedule needs the number of levels (>= 1) "
                        "in which to reach pruning.target_density"
                    )
            elif over_levels is not None:
                raise PruningConfigError("pruning.over_levels is read by geometric schedules only; oneshot is 1 level")
        return cls(kind=kind, fraction=float(fraction), densities=densities, target=target, over_levels=over_levels)

    @property
    def length(self) -> int | None:
        """The number of levels the schedule defines (None: unbounded)."""
        return {"fraction": None, "densities": len(self.densities), "geometric": self.over_levels, "oneshot": 1}[
            self.kind
        ]

    @property
    def per_level_fraction(self) -> float | None:
        """The fixed fraction of remaining weights pruned per level, where there is one."""
        if self.kind == "fraction":
            return self.fraction
        if self.kind == "geometric":
            return 1.0 - self.target ** (1.0 / self.over_levels)
        return None

    def density(self, level: int, rate: float | None = None) -> float:
        """Target density at `level` (1.0 at level 0); `rate` overrides the fraction for one layer."""
        if level < 0:
            raise PruningConfigError(f"level {level} is negative")
        if level == 0:
            return 1.0
        if self.length is not None and level > self.length:
            raise PruningConfigError(f"the {self.kind} schedule defines {self.length} levels, not level {level}")
        if self.kind == "fraction":
            return (1.0 - (self.fraction if rate is None else rate)) ** level
        if self.kind == "densities":
            return self.densities[level - 1]
        if self.kind == "geometric":
            return (1.0 - self.per_level_fraction) ** level
        return self.target

    def resolve_levels(self, requested: int | None) -> int:
        """How many pruning levels to run: the schedule's own count, or `levels` when it asks for a prefix."""
        if requested is None:
            return self.length if self.length is not None else DEFAULT_LEVELS
        if requested < 0:
            raise PruningConfigError(f"levels={requested} must be >= 0 (0 trains the dense network only)")
        if self.length is not None and requested > self.length:
            raise PruningConfigError(
                f"levels={requested} disagrees with pruning.schedule={self.kind}, which defines {self.length} levels; "
                f"drop `levels=` to run them all or ask for at most {self.length}"
            )
        return requested
