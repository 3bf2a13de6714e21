"""Process groups: one process, or several under `accelerate launch` / `torchrun` (CPU gloo or GPUs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    state: Any = None
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """Contiguous [start, stop) of n items for this rank (the first ranks take one more)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object
        return gather_object([obj])

    def barrier(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group before the interpreter exits: a gloo group torn down by the process's
        exit instead aborts it now and then ("terminate called without an active exception")."""
        if self.world <= 1:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def detect() -> Ranks:
    """The process group this process belongs to; builds accelerate's state only when launched with several."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks()
    from accelerate import PartialState
    import torch

    # Without a GPU, gloo on the CPU: `accelerate launch --multi_gpu` and torchrun both work then.
    state = PartialState(cpu=not torch.cuda.is_available())
    return Ranks(state.process_index, state.num_processes, state, str(state.device))
