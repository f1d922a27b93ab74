"""Class lists of the published checkpoints: the 527 AudioSet labels and DESED's 10 sound-event classes.

`audioset_class_labels_indices.csv` (shipped next to this module, package data) is the file distributed in the
EfficientAT repository's `metadata/` folder: `index,mid,display_name` in the order of the output units of the
published AudioSet taggers (EfficientAT, EAT, PaSST). Labels: Google AudioSet ontology, CC BY-SA 4.0
(Gemmeke et al., "Audio Set: An ontology and human-labeled dataset for audio events", ICASSP 2017).
DESED order follows ATST-SED `train/local/classes_dict.py` (spec atst_sed.md §4.2).
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

DESED_CLASSES: tuple[str, ...] = (
    "Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog", "Electric_shaver_toothbrush", "Frying",
    "Running_water", "Speech", "Vacuum_cleaner",
)  # fmt: skip


@lru_cache(maxsize=1)
def audioset_classes() -> tuple[str, ...]:
    """The 527 AudioSet display names in output-unit order.

    Example:
        >>> names = audioset_classes()
        >>> len(names), names[0], names[137]
        (527, 'Speech', 'Music')
    """
    text = resources.files("audiopipe.inference").joinpath("audioset_class_labels_indices.csv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    names = tuple(row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"])))
    if len(names) != 527:
        raise RuntimeError(f"packaged AudioSet class list has {len(names)} rows, expected 527; reinstall audiopipe")
    return names
