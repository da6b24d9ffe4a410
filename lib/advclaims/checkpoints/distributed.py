"""Training under torchrun: one process per GPU (or per CPU slot, with gloo), one store.

    torchrun --nproc_per_node 8 -m advclaims.cli train --role adv --dataset cifar10 --arch wrn28_10 --budget paper

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. Every rank builds the same model, takes its slice
of each batch, and DistributedDataParallel averages gradients (training.train); rank 0 holds the
store's lock for the key, evaluates and writes the checkpoint that every fixture then loads
(``fetch_once``). On CUDA, BatchNorm layers become SyncBatchNorm (training.train): statistics over the
whole batch, as in one process, so a DDP model is the model of its store key. On gloo (the CPU) they stay per
rank, and the key carries the world size (for architectures with BatchNorm; Pipeline.spec_of).
"""

from __future__ import annotations

import os

import torch


def launched() -> bool:
    """Whether this process was started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group; returns this rank's device (cuda:LOCAL_RANK on CUDA). Outside torchrun an explicit
    cuda:N becomes the current device (kernels, allocator and memory statistics are that GPU's)."""
    if not launched():
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"torchrun started rank with LOCAL_RANK {local} but this machine has "
                               f"{torch.cuda.device_count()} GPUs: use --nproc_per_node <= the GPU count")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) in the process group, (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def fetch_once(store, kind: str, spec: dict, make, *, device: torch.device):
    """``store.fetch`` of an entry that every rank makes together (a model trained with DDP): outside torchrun a
    plain fetch; under it, rank 0 takes the key's lock and decides. When the entry loads, it tells the other ranks to
    load it too; when it must be built, all ranks run ``make`` together, rank 0 writes the entry, and the others load
    it after a barrier."""
    rank, size = world()
    if size == 1:
        return store.fetch(kind, spec, make, device=device)
    dist = torch.distributed
    flag = torch.zeros(1, dtype=torch.long, device=device if dist.get_backend() == "nccl" else "cpu")
    if rank == 0:
        def lead():
            flag.fill_(1)
            dist.broadcast(flag, 0)  # "make it with me"
            return make()

        entry = store.fetch(kind, spec, lead, device=device)
        if not entry.made:
            dist.broadcast(flag, 0)  # flag is 0: "it is stored, load it"
        dist.barrier()
        return entry
    dist.broadcast(flag, 0)
    if int(flag.item()) == 1:
        make()
    dist.barrier()

    def refuse():
        raise RuntimeError(f"rank {dist.get_rank()}: rank 0 did not store the entry it made; see its log")

    return store.fetch(kind, spec, refuse, device=device)
