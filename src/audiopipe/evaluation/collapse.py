"""Does a tagger's output depend on its input? Score spread over the test clips and the collapse flag.

Reads the (N, C) sigmoid probabilities a tagger gave the N test clips; writes nothing. Keys it returns:

- `test/score_spread`: per class the standard deviation over clips of the probability (ddof 0), averaged over
  the C classes. A constant model scores 0; a model that separates present from absent tags scores ~0.1-0.5.
- `test/logit_spread`: the same on the logit scale (probabilities clipped to [1e-7, 1 - 1e-7] first), so a model
  that ranks clips well but keeps every probability tiny (rare classes) is not mistaken for a constant one.
- `test/collapsed`: 1.0 when the outputs barely depend on the input, i.e. `test/score_spread` <
  `SCORE_SPREAD_THRESHOLD` (0.01 in probability) *and* `test/logit_spread` < `LOGIT_SPREAD_THRESHOLD` (0.1);
  else 0.0. Typical causes: a model that fell back to predicting the class prior, dead activations, a final
  layer whose weights went to zero.
"""

from __future__ import annotations

import numpy as np

SCORE_SPREAD_THRESHOLD = 0.01  # mean over classes of the per-class std of probabilities over clips
LOGIT_SPREAD_THRESHOLD = 0.1  # the same on the logit scale
PROBABILITY_CLIP = 1e-7


def _logits(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(probabilities, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    return np.log(p) - np.log1p(-p)


def score_spread(probabilities: np.ndarray) -> dict[str, float]:
    """`test/score_spread`, `test/logit_spread` and `test/collapsed` of (N, C) probabilities (N >= 1)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"expected (N, C) probabilities with N >= 1, got shape {p.shape}")
    spread = float(p.std(axis=0).mean())
    logit_spread = float(_logits(p).std(axis=0).mean())
    collapsed = spread < SCORE_SPREAD_THRESHOLD and logit_spread < LOGIT_SPREAD_THRESHOLD
    return {"test/score_spread": spread, "test/logit_spread": logit_spread, "test/collapsed": float(collapsed)}


def collapse_warning(name: str, metrics: dict[str, float]) -> str | None:
    """One sentence naming `name` when `metrics["test/collapsed"]` is set, else None."""
    if not metrics.get("test/collapsed"):
        return None
    return (f"{name} looks collapsed: its test scores barely depend on the input (score spread "
            f"{metrics['test/score_spread']:.4f} < {SCORE_SPREAD_THRESHOLD}, logit spread "
            f"{metrics['test/logit_spread']:.4f} < {LOGIT_SPREAD_THRESHOLD}); compare it with the class prior")
