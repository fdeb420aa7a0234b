"""One IMP level on Lightning: the LightningModule, one fit from a given start, the artifacts a level leaves, the
Trainer's callbacks, the speed switches, DDP and the loggers. Everything the spine (lottery/imp.py, the branches)
trains goes through `fit.fit_level`, so the trunk and every branch train the same way."""
