"""Sharing the scoring work between processes started by ``torchrun`` or ``accelerate launch``.

accelerate's ``PartialState`` reads the launcher's environment and sets up torch.distributed
(NCCL on GPUs, gloo on CPU); each rank takes a contiguous share of the samples still missing from
the cache, writes its results to the shared store itself (SQLite serialises writers), waits for
the others, and the main process writes the one merged result. On GPUs accelerate makes each
rank's own GPU the current CUDA device, so models loaded on "cuda" land on it. Without a launcher (or with
``WORLD_SIZE=1``) everything runs in this process and accelerate is not needed.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, TypeVar

T = TypeVar("T")


class Ranks:
    def __init__(self, launched: Optional[bool] = None) -> None:
        """``launched``: None = detect a launcher from the environment; False = this process only."""
        if launched is None:
            launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.state: Optional[Any] = None
        if launched:
            import torch
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available())

    @property
    def world_size(self) -> int:
        return 1 if self.state is None else self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def mine(self, items: Sequence[T]) -> List[T]:
        """This rank's share of ``items`` (all of them when not distributed)."""
        if self.state is None:
            return list(items)
        with self.state.split_between_processes(list(items)) as part:
            return list(part)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main rank runs the block first, the others after it (accelerate's
        ``main_process_first``), e.g. to create a shared file before anyone else opens it."""
        if self.state is None:
            yield
        else:
            with self.state.main_process_first():
                yield

    def read_together(self, read: Callable[[], T]) -> T:
        """``read()`` on every rank at the same moment: after all earlier writes (a barrier) and
        before any rank writes again (a second barrier), so all ranks see the same state and
        split the same to-do list."""
        self.wait()
        result = read()
        self.wait()
        return result

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


    def finish(self) -> None:
        """End of the distributed part: every rank waits for the main one's outputs, then the
        process group is closed on all ranks together (a rank exiting while another is still in
        a collective makes gloo report a crashed peer)."""
        if self.state is not None:
            import torch.distributed as dist

            self.wait()
            if dist.is_initialized():
                dist.destroy_process_group()
