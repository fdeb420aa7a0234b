"""hydra/sweeper=lottery (the default): Hydra's basic sweeper, but every job of the sweep is composed and checked
before the first one is launched. Hydra's own sweeper composes a batch and launches it, then the next, so a bad value
in a later job (optim.lr=-1 in the fourth of eight) ended the sweep after the earlier jobs had trained; a launcher sees
only its batch. Here a bad job refuses the whole sweep, before any job starts or any folder is made, with the job's
overrides and the check's message (lottery.validate, and every optimizer setting torch would reject).
"""

import sys
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict


@dataclass
class ValidatingSweeperConf:
    _target_: str = "hydra_plugins.lottery_cohort_launcher.validating_sweeper.ValidatingSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="lottery", node=ValidatingSweeperConf)


def check_job(cfg) -> None:
    """The checks a job runs before it writes anything that need no data: lottery.validate and the optimizer."""
    from lottery.setup import check_optimizer
    from lottery.structured.pretrained import scores_as_loaded
    from lottery.validate import validate

    HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the job's settings (launcher presets) resolves
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    settings = OmegaConf.to_object(job)
    validate(settings)
    if not scores_as_loaded(settings):
        check_optimizer(OmegaConf.to_container(job.optim, resolve=True))


class ValidatingSweeper(BasicSweeper):
    def sweep(self, arguments):
        from lottery.cli import user_errors

        params = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides(params)
        swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}  # what names a job in the message
        batches = self.split_arguments(parsed, self.max_batch_size)
        jobs = [job for batch in batches for job in batch]
        refused = []
        for i, job in enumerate(jobs):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            try:
                check_job(cfg)
            except user_errors() as err:
                name = " ".join(o for o in job if o.split("=", 1)[0] in swept)
                refused.append(f"  job {i} ({name}): {err}")
        HydraConfig.instance().set_config(self.config)
        if refused:
            print(
                f"lottery: error: {len(refused)} of the sweep's {len(jobs)} jobs are refused, so none was started:\n"
                + "\n".join(refused),
                file=sys.stderr,
            )
            sys.exit(2)
        return super().sweep(arguments)
