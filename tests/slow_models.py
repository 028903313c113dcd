"""A LightningModule whose validation is slow, so that a search worker can be killed mid-trial.

Separate from ``tests.models`` because it imports Lightning; worker processes import it by path
(``lightning-nas search CKPT --model-class tests.slow_models.SlowDigitsClassifier``).
"""

from __future__ import annotations

import time
from typing import Any

from lightning_nas.demo import DigitsClassifier


class SlowDigitsClassifier(DigitsClassifier):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        time.sleep(0.3)
        return super().validation_step(batch, batch_idx)
