"""Sound event detection family: the DCASE-baseline CRNN, optionally fused with a frame-level encoder (ATST-SED).

`build(name, **kwargs)` builds `sed_crnn`, `sed_atst` and `sed_eat` (`model.py`); the parts live beside it:
`crnn.py` (CNN, BiGRU, heads), `frontend.py` (SED mel front end), `encoders.py` (ATST/EAT frame encoders).
"""

from __future__ import annotations

from audiopipe.models.sed.encoders import ATSTFrameEncoder, EATFrameEncoder, FrameEncoder
from audiopipe.models.sed.model import SEDModel, as_sed_model, build, resample_frames

__all__ = [
    "ATSTFrameEncoder", "EATFrameEncoder", "FrameEncoder", "SEDModel", "as_sed_model", "build", "resample_frames",
]
