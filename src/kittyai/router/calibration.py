"""The local tier's confidence threshold, calibrated to keep a share of turns local.

The local answer stands when its confidence is at or above the threshold. Given a
target local share L, RouteLLM's recipe sets the threshold to the (1 - L) quantile
of recent scores, so about L of the turns to come clear it, provided they score like
the recent ones. Escalated turns keep their local score in the log too, so the
scores are those of every scored turn, not only of the ones kept local.
"""

from collections.abc import Sequence

from kittyai.router.ledger import DecisionLedger
from kittyai.router.options import RoutingOptions

# Fewer scores than this say too little about the distribution to move the threshold.
MIN_SCORES = 20


def threshold_for_share(scores: Sequence[float], target_local_share: float) -> float | None:
    """Return the threshold that `target_local_share` of `scores` reach; None if too few.

    It is the lowest of the best `round(share * n)` scores (at least one): the
    (1 - share) quantile by nearest rank.
    """
    if len(scores) < MIN_SCORES:
        return None
    local_count = max(round(target_local_share * len(scores)), 1)
    return sorted(scores, reverse=True)[local_count - 1]


class ThresholdCalibrator:
    """Holds the threshold and moves it toward the target local share as turns arrive."""

    def __init__(self, routing: RoutingOptions) -> None:
        """Start at the configured threshold."""
        self._routing = routing
        self._threshold = routing.confidence_threshold
        self._scored_since_recalibration = 0

    @property
    def threshold(self) -> float:
        """Return the confidence the local tier needs now."""
        return self._threshold

    async def recalibrate(self, ledger: DecisionLedger) -> float:
        """Recompute the threshold from the ledger's recent scores and return it.

        Without a target local share, or with too few scores, the threshold stays.
        """
        target = self._routing.target_local_share
        if target is None:
            return self._threshold
        scores = await ledger.recent_scores(self._routing.calibration_window)
        if (threshold := threshold_for_share(scores, target)) is not None:
            self._threshold = threshold
        return self._threshold

    async def note_decision(self, ledger: DecisionLedger) -> None:
        """Count a recorded, scored decision; recalibrate every `recalibrate_every` of them."""
        self._scored_since_recalibration += 1
        if self._scored_since_recalibration >= self._routing.recalibrate_every:
            self._scored_since_recalibration = 0
            await self.recalibrate(ledger)
