"""What every toy model's training shares: one CPU thread while it runs, the small report
(first and last losses, seconds) that ``toy_models.json`` keeps, and, in a training process of
its own, ending with the process that started it."""
from __future__ import annotations

import os
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


def exit_with_parent(parent: int) -> None:
    """In a worker: end when the process that started it is gone (a ``kill -9`` of the demo),
    instead of training on into folders a rerun trains into. Linux asks the kernel
    (PR_SET_PDEATHSIG); elsewhere a thread watches the parent's pid."""
    import signal
    import threading
    import time

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died before the request took effect
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True, name="igpt4-exit-with-parent").start()
