"""What every toy model's training shares: one CPU thread while it runs, and the small report
(first and last losses, seconds) that ``toy_models.json`` keeps."""
from __future__ import annotations

import time
from typing import Any, Dict, Sequence


class OneThread:
    """Run tiny-model training on one CPU thread: matrices this small gain little from threads,
    and on busy or oversubscribed cores OpenMP's spin-waiting makes 2 threads 5-25x slower than
    one (measured on a shared 2-core machine)."""

    def __enter__(self) -> "OneThread":
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.set_num_threads(self.threads)


def loss_report(losses: Sequence[float], steps: int, began: float) -> Dict[str, Any]:
    """The mean loss of the first and of the last tenth of the steps, and the seconds since
    ``began``: enough to see that training went down, without keeping every step."""
    tail = max(1, steps // 10)
    return {"loss_first": round(sum(losses[:tail]) / tail, 4),
            "loss_last": round(sum(losses[-tail:]) / tail, 4),
            "seconds": round(time.time() - began, 1)}
