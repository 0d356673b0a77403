"""This process's place in a run: one process, or one rank of a torchrun/accelerate launch.

``ProcessGroup.detect()`` is the single place that decides: with ``WORLD_SIZE`` > 1 it
wraps accelerate's ``PartialState`` (on a machine without a GPU created with
``cpu=True``, i.e. MULTI_CPU over gloo: a plain ``PartialState()`` there would not shard
and every process would do every row); otherwise a local group of one. Build and
evaluate both use it as a context manager, which owns the teardown of the process group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class ProcessGroup:
    rank: int = 0
    world: int = 1
    state: Any = None
    #: The launcher's device for this rank (cuda:N under a GPU launch), None otherwise.
    device: str | None = None

    @classmethod
    def detect(cls) -> "ProcessGroup":
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        import torch
        from accelerate import PartialState

        gpu = torch.cuda.is_available()
        state = PartialState(cpu=not gpu)
        return cls(state.process_index, state.num_processes, state, str(state.device) if gpu else None)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def split(self, rows: Sequence[Any]) -> list[Any]:
        """This rank's contiguous share of ``rows`` (every row on exactly one rank)."""
        if not self.distributed:
            return list(rows)
        with self.state.split_between_processes(list(rows)) as part:
            return list(part)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.distributed:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def barrier(self) -> None:
        if self.distributed:
            self.state.wait_for_everyone()

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


@contextmanager
def process_group() -> Iterator[ProcessGroup]:
    """``with process_group() as pg:`` detects the group and tears it down on the way out."""
    pg = ProcessGroup.detect()
    try:
        yield pg
    finally:
        pg.close()


__all__ = ["ProcessGroup", "process_group"]
