"""A runner that trains where the stock one cannot: on a CPU, and without torch.distributed.

Registered as ``run.runner: igpt4_portable`` in both hosts, made per host from that host's own
``RunnerBase`` so that everything else (optimizer groups, lr schedules, the version's batch-size
layout, checkpoint format) is the stock behaviour of the host version in use. On a CUDA device with
torch.distributed it changes nothing but the output folder. What it fixes:

* ``RunnerBase.model`` returns None when the model already sits on the run device (always so on a
  CPU): the model is wrapped on first use instead.
* ``PrefetchLoader`` creates a CUDA stream: on a CPU the loaders are built without it.
* AMP's GradScaler is CUDA-only: on a CPU ``amp`` is off.
* LAVIS calls ``dist.barrier()`` after every epoch even when not distributed: without a process
  group that barrier is skipped.
* A relative ``run.output_dir`` lands inside the host package (``library_root``), i.e. inside the
  checkout: it is placed under :func:`selector.paths.runs_dir` instead (``$IGPT4_RUNS``, default
  ``~/.local/share/instructiongpt4/runs``), never under the checkout or the working directory
  (``train.py`` runs from the checkout). An absolute one is used as given. The selection the data
  came from (ids, scores, settings) is copied into the run's output folder.
* ``run.device: cuda`` on a machine without CUDA falls back to the CPU, with a warning.
* The host's ``IterLoader`` sleeps 2 s at every epoch end, against a deadlock of loader worker
  processes; with ``run.num_workers: 0`` there are none, and that sleep would be most of a short
  CPU run (the demo's label runs: 9 of their 25 s), so it is skipped.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

NAME = "igpt4_portable"


class _NoSleep:
    """``time`` as the host's loader module sees it, minus ``sleep``."""

    @staticmethod
    def sleep(seconds: float) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)


class _NoBarrier:
    """torch.distributed as the runner module sees it, minus ``barrier`` (no group, no-op)."""

    def __init__(self, dist: Any) -> None:
        self._dist = dist

    def barrier(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dist, name)


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """Swap one module-level name of the host's runner module while the host's code runs."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def runner_class(host: Any) -> type:
    base = host.RunnerBase

    class PortableRunner(base):
        def __init__(self, cfg: Any, task: Any, model: Any, datasets: Any, job_id: str) -> None:
            run = cfg.run_cfg
            output = Path(str(run.output_dir)).expanduser()
            if not output.is_absolute():
                from selector.core.paths import runs_dir

                output = runs_dir() / output
            run.output_dir = str(output)
            super().__init__(cfg=cfg, task=task, model=model, datasets=datasets, job_id=job_id)
            logging.info("instructiongpt4: this run writes to %s", self.output_dir)
            self._keep_selections()

        def _keep_selections(self) -> None:
            """Copy each dataset's selection (filter_cap.json, manifest.json) into the run."""
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
                return
            for name, splits in self.datasets.items():
                for dataset in splits.values() if isinstance(splits, dict) else [splits]:
                    folder = getattr(dataset, "selection_folder", None)
                    if folder is not None:
                        target = Path(self.output_dir) / "selection" / name
                        shutil.copytree(folder, target, dirs_exist_ok=True)
                        logging.info("instructiongpt4: selection of %s -> %s", name, target)

        @property
        def device(self) -> Any:
            import torch

            if self._device is None:
                wanted = torch.device(self.config.run_cfg.device)
                if wanted.type == "cuda" and not torch.cuda.is_available():
                    logging.warning("run.device is %s but CUDA is not available: training on "
                                    "the CPU", wanted)
                    wanted = torch.device("cpu")
                self._device = wanted
            return self._device

        @property
        def model(self) -> Any:
            if self._wrapped_model is None and self._model.device == self.device:
                if self.use_distributed:
                    from torch.nn.parallel import DistributedDataParallel

                    ids = [self.config.run_cfg.gpu] if self.device.type == "cuda" else None
                    self._wrapped_model = DistributedDataParallel(self._model, device_ids=ids)
                else:
                    self._wrapped_model = self._model
            return super().model

        @property
        def scaler(self) -> Any:
            return super().scaler if self.device.type == "cuda" else None

        def create_loaders(self, *args: Any, **kwargs: Any) -> Any:
            if self.device.type == "cuda":
                return super().create_loaders(*args, **kwargs)
            # the host's own loader code, minus its CUDA-only prefetching wrapper
            with _patched(sys.modules[base.__module__], "PrefetchLoader", lambda loader: loader):
                return super().create_loaders(*args, **kwargs)

        def train(self) -> Any:
            import torch.distributed as dist

            with contextlib.ExitStack() as patches:
                if int(self.config.run_cfg.get("num_workers", 0) or 0) == 0:
                    loaders = sys.modules[sys.modules[base.__module__].IterLoader.__module__]
                    patches.enter_context(_patched(loaders, "time", _NoSleep()))
                if not (dist.is_available() and dist.is_initialized()):
                    patches.enter_context(_patched(sys.modules[base.__module__], "dist",
                                                   _NoBarrier(dist)))
                return super().train()

    PortableRunner.__qualname__ = "PortableRunner"
    return PortableRunner
