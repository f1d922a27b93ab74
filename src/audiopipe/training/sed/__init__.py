"""Parts of the ATST-SED task (`training/finetune_sed.py`): the mean-teacher train step (`step.py`), optimizer
parameter groups (`optim.py`), validation and PSDS scoring (`validation.py`) and the frozen-encoder feature
cache (`feature_cache.py`)."""
