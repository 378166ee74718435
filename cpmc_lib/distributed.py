"""Several processes (``torchrun``): process group, rank queries, sharding and a seeded sampler.

``torchrun --nproc_per_node N -m cpmc_lib <command> ...`` starts N copies of the command line with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` in the environment.
:func:`process_group` joins them (NCCL on CUDA, gloo on CPU). Without that environment every
function here answers for a single process (rank 0 of 1, barriers are no-ops), so a plain
``python -m cpmc_lib`` run takes exactly the code path it took before.

Example:
    >>> world_size(), rank(), is_main()
    (1, 0, True)
    >>> shard(list("abcde"), part=1, parts=2)
    ['b', 'd']
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, RandomSampler, Sampler, Subset

__all__ = [
    "EpochShardSampler",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "gather_cat",
    "is_main",
    "launched",
    "local_batch_size",
    "make_sampler",
    "process_group",
    "rank",
    "shard",
    "shard_dataset",
    "sync_buffers",
    "world_size",
]

T = TypeVar("T")


def launched() -> bool:
    """True when started by ``torchrun`` (or anything else that sets ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def world_size() -> int:
    """Number of processes in the group (1 when none was initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when no group was initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that logs, shows progress bars and writes checkpoints and manifests."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the ``torchrun`` group for the duration of the block, then destroy it.

    Outside ``torchrun`` (no ``WORLD_SIZE``) or inside an existing group this does nothing.

    Args:
        device: the training device; ``cuda`` selects NCCL and binds this rank to GPU
            ``LOCAL_RANK`` (so ``"cuda"`` means that GPU), anything else selects gloo.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_batch_size(batch_size: int, key: str = "batch_size") -> int:
    """Each rank's share of the global ``batch_size`` (the config's value is the global batch)."""
    world = world_size()
    if batch_size % world:
        raise ValueError(
            f"{key}={batch_size} is the global batch and must be divisible by the {world} processes; "
            f"use a multiple of {world}"
        )
    return batch_size // world


def shard(items: Sequence[T], part: int | None = None, parts: int | None = None) -> list[T]:
    """This rank's items: those at positions ``i`` with ``i % parts == part`` (default: rank, world)."""
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    return [x for i, x in enumerate(items) if i % parts == part]


def shard_dataset(dataset):
    """This rank's images of ``dataset`` (:func:`shard` of its indices); ``dataset`` itself in one process."""
    if world_size() == 1:
        return dataset
    return Subset(dataset, shard(range(len(dataset))))


class EpochShardSampler(DistributedSampler):
    """A :class:`~torch.utils.data.DistributedSampler` shuffled by the epoch's generator.

    Every rank draws the same permutation from ``generator`` (seeded by
    :func:`cpmc_lib.engine.fit` from ``(seed, epoch)``), keeps ``n - n % world`` of it and takes
    every ``world``-th index from position ``rank``. Batch ``b`` of all ranks together is then
    batch ``b`` of one process with the same global batch, and with one rank the order is exactly
    that of ``RandomSampler(generator=generator)``. The DataLoader must get the same ``generator``
    (it draws its worker seed first, as in a single process).
    """

    def __init__(self, dataset, generator: torch.Generator, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, drop_last=True)
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        # A generator function: the permutation is drawn at the first batch, after the DataLoader's
        # own draw from the same generator, as RandomSampler does.
        perm = torch.randperm(len(self.dataset), generator=self.generator).tolist()
        yield from perm[: self.total_size][self.rank :: self.num_replicas]


def make_sampler(dataset, generator: torch.Generator) -> Sampler:
    """The training sampler: ``RandomSampler`` in one process, :class:`EpochShardSampler` under torchrun.

    ``RandomSampler(dataset, generator=generator)`` is what ``DataLoader(shuffle=True,
    generator=generator)`` builds itself, so a single-process run shuffles as it always did.
    """
    if world_size() == 1:
        return RandomSampler(dataset, generator=generator)
    return EpochShardSampler(dataset, generator, world_size(), rank())


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """Sum each value over the ranks (a copy in a single process)."""
    if world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = all_reduce_tensor(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
    return dict(zip(keys, t.tolist(), strict=True))


def all_reduce_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks, as a new CPU tensor of ``t``'s dtype (``t`` itself in one process).

    Summed in float64: exact for counts below 2**53, e.g. confusion matrices of any dataset.
    """
    if world_size() == 1:
        return t
    x = t.detach().to(torch.float64)
    if dist.get_backend() == "nccl":
        x = x.cuda()
    dist.all_reduce(x)
    return x.cpu().to(t.dtype)


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (rows of any count) concatenated in rank order, on every rank (``t`` in one process)."""
    if world_size() == 1:
        return t
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, t.detach().cpu())
    return torch.cat(parts)


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) into ``model`` on every rank, before it is scored:
    DDP keeps the weights equal, but each rank's last batches moved its own statistics."""
    if world_size() == 1:
        return
    buffers = broadcast_object({k: b.cpu() for k, b in model.named_buffers()})
    with torch.no_grad():
        for k, b in model.named_buffers():
            b.copy_(buffers[k])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; ``obj`` itself in one process)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
