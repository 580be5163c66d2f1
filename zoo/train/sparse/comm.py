"""The collectives of dynamic sparse training: every process of the group holds rank 0's masks and random draws.
No-ops in a single process."""

import torch
import torch.distributed as dist

__all__ = ["broadcast_masks", "comm_device", "dist_world", "src_rank", "sync_generator"]


def dist_world(group) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def src_rank(group) -> int:
    return dist.get_global_rank(group, 0) if group is not None else 0


def comm_device(group) -> torch.device:
    """Where the group's collectives run: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sync_generator(generator: torch.Generator, group) -> None:
    """Rank 0's generator state, everyone's (the same random draws on every process)."""
    if dist_world(group) > 1:
        state = generator.get_state()
        dev = comm_device(group)
        buf = state.to(dev)
        dist.broadcast(buf, src=src_rank(group), group=group)
        generator.set_state(buf.cpu())


def broadcast_masks(masks: dict[str, torch.Tensor], extra: dict[str, torch.Tensor] | None, group) -> None:
    """Make rank 0's masks (and ``extra`` bool tensors of the same layers) everyone's, in place."""
    if dist_world(group) <= 1 or not masks:
        return
    names = sorted(masks)
    code = [masks[n].flatten().to(torch.uint8) for n in names]
    if extra is not None:
        code = [c + 2 * extra[n].flatten().to(torch.uint8) for c, n in zip(code, names)]
    buf = torch.cat(code).to(comm_device(group))
    dist.broadcast(buf, src=src_rank(group), group=group)
    for n, part in zip(names, buf.split([masks[n].numel() for n in names])):
        part = part.to(masks[n].device)
        masks[n] = (part & 1).bool().view_as(masks[n])
        if extra is not None:
            extra[n] = (part & 2).bool().view_as(masks[n])
