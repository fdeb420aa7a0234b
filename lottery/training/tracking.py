"""Loggers for a run: W&B (offline by default), Lightning's CSVLogger, or none.

One W&B run per (experiment hash, seed, branch): group = the hash, job_type = the branch ("trunk" for IMP itself),
config = the resolved config, tags for model, data and seed, and an id derived from the output folder so a resumed run
keeps logging to the same W&B run. The run opens lazily, when a level actually trains, so re-running a finished
experiment adds nothing. W&B trouble never stops a run: it is reported once and the run continues with its local
artifacts, which are complete on their own.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from lottery.config import LotteryConfig
from lottery.core.layout import RunPaths


class SafeWandbLogger(WandbLogger):
    """Lightning's WandbLogger, except that a failing W&B call is reported once (through `on_error`) and the rest of
    the run's W&B calls are skipped, instead of crashing training."""

    def __init__(self, on_error, **kwargs) -> None:
        super().__init__(**kwargs)
        self._on_error = on_error
        self._broken = False

    def _guard(self, call, *args, **kwargs) -> None:
        if self._broken:
            return
        try:
            call(*args, **kwargs)
        except Exception as err:
            self._broken = True
            self._on_error("logging failed", err)

    def log_metrics(self, metrics, step=None) -> None:
        self._guard(super().log_metrics, metrics, step)

    def log_hyperparams(self, params) -> None:
        self._guard(super().log_hyperparams, params)


def run_id(paths: RunPaths, branch: str = "trunk") -> str:
    key = f"{paths.name}/{paths.hash}/seed_{paths.seed}/{branch}"
    return f"{paths.hash}-s{paths.seed}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


class Tracker:
    def __init__(self, cfg: LotteryConfig, paths: RunPaths, resolved: dict[str, Any], branch: str = "trunk") -> None:
        self.cfg, self.paths, self.resolved, self.branch = cfg, paths, resolved, branch
        self.enabled = cfg.logger.kind == "wandb" and cfg.logger.mode != "disabled"
        self.run = None
        self._failed = False

    @property
    def csv_dir(self):
        base = self.paths.seed_dir if self.branch == "trunk" else self.paths.branch_dir(self.branch)
        return base / "logs"

    def _open(self):
        if self.run is not None or not self.enabled or self._failed:
            return self.run
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            self.run = wandb.init(
                project=self.cfg.logger.project,
                entity=self.cfg.logger.entity,
                dir=str(self.paths.seed_dir),
                id=run_id(self.paths, self.branch),
                name=f"{self.paths.name}/{self.paths.hash}/seed_{self.paths.seed}/{self.branch}",
                group=self.paths.hash,
                job_type=self.branch,
                tags=[f"model:{self.cfg.model.name}", f"data:{self.cfg.data.name}", f"seed:{self.cfg.seed}"],
                config=self.resolved,
                mode=self.cfg.logger.mode,
                resume="allow",
                reinit="create_new",  # a cohort holds one run per seed open at once
            )
        except Exception as err:  # no network, bad credentials, a broken install: report once, keep training
            self._fail("could not start", err)
        return self.run

    def _fail(self, what: str, err: Exception) -> None:
        if not self._failed:
            warnings.warn(
                f"W&B {what} ({type(err).__name__}: {err}); the run continues and writes its results to "
                f"{self.paths.seed_dir} only. Use logger=csv or logger=none to silence this.",
                stacklevel=3,
            )
        self._failed, self.run = True, None

    def level_loggers(self, level: int) -> list[Logger]:
        if self.enabled and self._open() is not None:
            return [SafeWandbLogger(on_error=self._fail, experiment=self.run)]
        if self.cfg.logger.kind == "csv":
            return [CSVLogger(save_dir=str(self.csv_dir), name="", version=f"level_{level}")]
        return []

    def log_level(self, metrics: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({f"imp/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        except Exception as err:
            self._fail("logging failed", err)

    def log(self, values: dict[str, Any]) -> None:
        """Free-form values of an analysis (instability barrier, early-bird step) in this branch's run."""
        if self._open() is None:
            return
        try:
            self.run.log(values)
        except Exception as err:
            self._fail("logging failed", err)

    def log_summary(self, summary: dict[str, Any], figure_path=None, masks: dict | None = None) -> None:
        """Ticket quality at the end of a run: summary values, a table of the levels, the accuracy-vs-density figure
        and, if asked, the masks as an artifact."""
        if self.run is None:
            return
        try:
            import wandb

            self.run.summary["ticket/metric"] = summary.get("metric", "final")  # which test accuracy judges
            self.run.summary["ticket/dense_test_acc"] = summary["dense_test_acc"]
            self.run.summary["ticket/min_matching_density"] = summary["min_matching_density"]
            columns = ["level", "density", "test_acc", "early_stop_test_acc", "best_val_acc", "best_val_step"]
            branches, key = summary["branches"], summary.get("metric_key", "test_acc")
            table = wandb.Table(columns=columns + [f"{b}_{key}" for b in branches])
            for row in summary["levels"]:
                controls = [row["controls"].get(b, {}).get(key) for b in branches]
                table.add_data(*[row.get(c) for c in columns], *controls)
            payload: dict[str, Any] = {"ticket/levels": table}
            if figure_path is not None:
                payload["ticket/accuracy_vs_density"] = wandb.Image(str(figure_path))
            self.run.log(payload)
            if masks:
                artifact = wandb.Artifact(f"masks-{self.paths.hash}-s{self.paths.seed}-{self.branch}", type="mask")
                for level, path in masks.items():
                    artifact.add_file(str(path), name=f"level_{level}/mask.pt")
                self.run.log_artifact(artifact)
        except Exception as err:
            self._fail("summary logging failed", err)

    def log_structured(self, report: dict[str, Any], figures: dict[str, Any]) -> None:
        """A structured study's report (no levels): dense accuracy, the removable fractions as summary values, the
        curves, the layer-by-layer removals and the dead-unit census as tables, and the figures (the layer x head
        heatmap among them)."""
        if self._open() is None:
            return
        try:
            import wandb

            summary = self.run.summary
            summary["structured/dense_test_acc"] = report["dense"]["test_acc"]
            summary["structured/chance"] = report["chance"]
            curves = wandb.Table(columns=["kind", "score", "fraction", "removed", "acc", "acc_sd", "loss"])
            for kind, by_score in report.get("no_retrain", {}).items():
                for score, result in by_score.items():
                    if result["removable_fraction"] is not None:
                        summary[f"structured/removable/{kind}/{score}"] = result["removable_fraction"]
                    for p in result["curve"]:
                        curves.add_data(kind, score, p["fraction"], p["removed"], p["acc"], p["acc_sd"], p["loss"])
            payload: dict[str, Any] = {"structured/curves": curves}
            if "layer_removal" in report:
                layers = wandb.Table(columns=["layer", "acc", "loss", "angular_distance"])
                for r in report["layer_removal"]:
                    layers.add_data(r["layer"], r["acc"], r["loss"], r["angular_distance"])
                payload["structured/layer_removal"] = layers
            if "census" in report:
                census = wandb.Table(columns=["layer", "dead", "units", "fraction"])
                for r in report["census"]["per_layer"]:
                    census.add_data(r["layer"], r["dead"], r["units"], r["fraction"])
                payload["structured/dead_units"] = census
                summary["structured/dead_fraction"] = report["census"]["fraction"]
            for name, path in figures.items():
                payload[f"structured/{name}"] = wandb.Image(str(path))
            self.run.log(payload)
        except Exception as err:
            self._fail("structured report logging failed", err)

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as err:
                self._fail("finish failed", err)
            self.run = None
