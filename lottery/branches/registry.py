"""The branches, by name: what `branch=<name>` runs and how reports draw it. Adding a branch is one module and one
line here (open_lth's shape): `job` runs it, `validate` checks it, `tickets.json`, the end-of-run table and
`lottery-compare` show it, without matching its name anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lottery.branches import early_bird, instability
from lottery.branches.controls import ONESHOT, RANDOM_PRUNE, RANDOM_REINIT, Control, check_reinit

if TYPE_CHECKING:
    from lottery.branches.spec import BranchSpec
    from lottery.training.tracking import Tracker


def _none(*args: Any) -> None:
    return None


@dataclass(frozen=True)
class Branch:
    """One branch.

    run             trains (or resumes) it beside a finished trunk
    own_levels      it trains levels of its own, drawn as a line beside the ticket (controls, early-bird tickets),
                    rather than analysing the trunk's levels (instability)
    style           (marker, line style) of that line in figures
    units_chosen_by what picks a structured control's units (`score`: the run's score)
    not_structured  why it is not available with pruning.strategy=structured (empty: it is)
    check           check(cfg): its own settings, run whichever branch runs, so a sweep fails before its first job
    check_levels    check_levels(cfg, levels): run when it is the selected branch, once the run's levels are known
    folder          folder(cfg): its folder and W&B run name (default: its name)
    control         the control it trains (its mask rule and start), for branches that are one: launcher=cohort
                    then trains the control of every seed of a sweep as one cohort per level
    """

    name: str
    run: Callable[[BranchSpec, Tracker], Any]
    own_levels: bool
    style: tuple[str, Any]
    units_chosen_by: str | None = None
    not_structured: str = ""
    check: Callable[[Any], None] = _none
    check_levels: Callable[[Any, int], None] = _none
    folder: Callable[[Any], str] | None = None
    control: Control | None = None

    def folder_of(self, cfg: Any) -> str:
        return self.folder(cfg) if self.folder is not None else self.name


TICKET_STYLE = ("o", "-")  # the ticket solid; each control its own dash pattern in the configuration's colour

BRANCHES: dict[str, Branch] = {
    b.name: b
    for b in (
        Branch(
            "random_reinit",
            RANDOM_REINIT.run,
            True,
            ("^", ":"),
            "trunk's units",
            check=check_reinit,
            control=RANDOM_REINIT,
        ),
        Branch("random_prune", RANDOM_PRUNE.run, True, ("x", "--"), "random", control=RANDOM_PRUNE),
        Branch("oneshot", ONESHOT.run, True, ("s", "-."), "score", control=ONESHOT),
        Branch(
            "instability",
            instability.run_instability,
            own_levels=False,
            style=TICKET_STYLE,
            check=instability.check,
            check_levels=instability.check_levels,
        ),
        Branch(
            "early_bird",
            early_bird.run_early_bird,
            own_levels=True,
            style=("D", (0, (5, 1))),
            not_structured="its detector draws weight-magnitude masks, not unit masks",
            check=early_bird.check,
            check_levels=early_bird.check_levels,
            folder=early_bird.branch_folder,
        ),
    )
}
NAMES = ("none", *BRANCHES)  # `branch=none` runs the trunk alone


def line_style(line: str) -> tuple[str, Any]:
    """(marker, line style) of a figure's line: `ticket`, or a branch folder (early_bird_<settings> is early_bird)."""
    return next((b.style for name, b in BRANCHES.items() if b.own_levels and line.startswith(name)), TICKET_STYLE)


# What a fit's callbacks are made by on the followers of a cluster launch (training/fit.follow_fit): the name a
# callback class carries in `remade_by` -> a function of the run's settings giving the same callback.
FIT_CALLBACKS: dict[str, Callable[[Any], Any]] = {early_bird.EarlyBirdCallback.remade_by: early_bird.search_callback}
