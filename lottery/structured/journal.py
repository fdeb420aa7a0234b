"""A study that survives a kill: every measurement of a pretrained no-retrain study (the dense evaluation, each score,
each layer removed alone, each grid point, the census) is written to `no_retrain/partial.json` as soon as it is made,
atomically (temporary file, then os.replace: lottery/core/artifacts.py), and a re-run with the same settings takes
the measurements already there instead of making them again. JSON keeps a Python float exactly (its repr
round-trips), and everything after a measurement is a function of the measurements (rankings, random draws from
fixed seeds, intervals from fixed resamples), so a resumed study ends with the same results.json, bit for bit, as an
uninterrupted one (tests/test_study_resume.py kills it at three points).

What is kept: plain JSON values; a tensor is kept as nested lists and comes back as a float64 tensor, the dtype every
score is made in. Partial results measured under other settings are discarded, never mixed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lottery.core import artifacts


class Journal:
    """Measurements of one study by key, kept in `path` under `settings` (a JSON-able dict)."""

    def __init__(self, path: Path | None, settings: dict[str, Any]) -> None:
        self.path, self.settings, self.done = path, settings, {}
        if path is not None and path.is_file():
            kept = artifacts.read_json(path, "partial no-retrain results")
            if kept.get("settings") == settings:
                self.done = kept["done"]
        self.resumed = len(self.done)  # measurements taken from an earlier, interrupted run

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def value(self, key: str, measure: Callable[[], Any]) -> Any:
        """The measurement `key`: kept from before, or made now by `measure()` and written at once."""
        if key not in self.done:
            # through JSON at once, so a fresh measurement and a kept one are the same values of the same types
            self.done[key] = json.loads(json.dumps(measure()))
            self._write()
        return self.done[key]

    def tensor(self, key: str, measure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A float64 tensor measurement (kept as nested lists)."""
        return torch.tensor(self.value(key, lambda: measure().double().tolist()), dtype=torch.float64)

    def tensors(self, key: str, measure: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        kept = self.value(key, lambda: {k: v.double().tolist() for k, v in measure().items()})
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in kept.items()}

    def _write(self) -> None:
        if self.path is not None:
            artifacts.write_json({"settings": self.settings, "done": self.done}, self.path)

    def finish(self) -> None:
        """The study is whole (results.json written): the partial file goes."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def memory() -> Journal:
    """A journal that keeps nothing on disk (tests, callers without a run folder)."""
    return Journal(None, {})
