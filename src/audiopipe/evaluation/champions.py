"""MLflow Model Registry `champion` aliases from the `evaluate` metrics: the best tagger and the best detector.

The tagger with the highest test mAP and the SED model whose student has the highest test PSDS1 + PSDS2, among
the final models of `final_models` that the stages registered. MLflow is imported only when this runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiopipe.evaluation.final_models import SED, TAGGERS

log = logging.getLogger(__name__)


def crown_champions(metrics: Mapping[str, Any], data: Path) -> None:
    """Alias `champion` on the best tagger (test mAP) and the best detector (test PSDS1 + PSDS2 of the student)
    among the registered stage outputs under `data`; a registry that cannot be reached only warns.

    `metrics` is `evaluate_pipeline`'s nested result: `{"tagging": {name: {...}}, "sed": {name: {...}}}`.
    """
    from audiopipe.tracking.outputs import registered_name
    from audiopipe.tracking.pyfunc_model import crown_champions as set_aliases

    nan = float("nan")
    tagging, sed = metrics.get("tagging", {}), metrics.get("sed", {})
    scores = {
        "tagger": {registered_name(data / rel): (tagging.get(name) or {}).get("test/mAP", nan)
                   for name, rel in TAGGERS.items()},
        "detector": {registered_name(data / rel): sum((sed.get(f"{name} student") or {}).get(k, nan)
                                                      for k in ("psds1", "psds2"))
                     for name, rel in SED.items()},
    }
    try:
        log.info("evaluate: MLflow champion aliases %s", set_aliases(scores) or "none (no registered models)")
    except Exception as err:  # noqa: BLE001 - the registry is a convenience; the evaluation itself succeeded
        log.warning("evaluate: could not set the MLflow champion aliases: %s", err)
