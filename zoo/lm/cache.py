"""The decoder's static key/value cache, :class:`KVCache`.

One preallocated tensor pair of shape ``(slots, B, kv_heads, max_length, head_dim)``. A *slot* is one application
of an attention layer: a plain stack uses slot ``i`` for layer ``i``; a stack that runs a shared layer several times
(layer sharing, recursion) gives every run its own slot. Each slot keeps its own length and, optionally
(``track_positions=True``), the original sequence index of every cached token, so a slot may hold only a routed
subset of the tokens. The cache never changes shape after it is made. Sequence indices (0 for the first token of
the sequence, padding included) are what the masks of :mod:`zoo.lm.blocks` decide causality and windows on.
"""

from collections.abc import Sequence

import torch

__all__ = ["KVCache"]


class KVCache:
    """A static key/value cache: ``slots`` x ``(batch_size, num_kv_heads, length, head_dim)``, preallocated.

    ``update(slot, k, v)`` writes ``T`` new entries after the slot's current ones and returns the slot's keys and
    values (views, no copy). While autograd records (grad mode), the cache stores detached copies and returns the
    cached past followed by the new entries themselves, so gradients flow through the forward that computed them
    and the cache never holds a graph. Lengths are per slot; ``seq_length`` is the length of slot 0 (the number
    of tokens a plain stack has seen). With ``track_positions`` every entry also records its sequence index
    (``positions(slot)``), for slots that cache a routed subset of the tokens.

    ``windows`` (one per slot, ``None`` for full attention) gives sliding-window slots a buffer of only their
    window: once full, an update returns the held entries followed by the new ones (a temporary) and keeps the
    last ``window``. ``evicted(slot)`` says how many of the slot's first tokens are gone, i.e. where the returned
    keys start in the sequence, so that a mask over the whole sequence is cut to them.
    """

    def __init__(
        self,
        num_slots: int,
        batch_size: int,
        num_kv_heads: int,
        max_length: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        track_positions: bool = False,
        windows: Sequence[int | None] | None = None,
        capacities: Sequence[int | None] | None = None,
    ):
        for name, value in (
            ("num_slots", num_slots),
            ("batch_size", batch_size),
            ("num_kv_heads", num_kv_heads),
            ("max_length", max_length),
            ("head_dim", head_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive int, got {value!r}")
        windows = [None] * num_slots if windows is None else list(windows)
        if len(windows) != num_slots or any(w is not None and (not isinstance(w, int) or w < 1) for w in windows):
            raise ValueError(f"KVCache: windows must be {num_slots} entries of None or a positive int, got {windows}")
        if track_positions and any(w is not None for w in windows):
            raise ValueError("KVCache: routed slots (track_positions) cannot have sliding windows")
        capacities = [None] * num_slots if capacities is None else list(capacities)
        if len(capacities) != num_slots or any(c is not None and (not isinstance(c, int) or c < 1) for c in capacities):
            raise ValueError(f"KVCache: capacities must be {num_slots} entries of None or a positive int")
        self.windows = windows
        self.capacity = [
            min(w, max_length) if w is not None else min(c or max_length, max_length)
            for w, c in zip(windows, capacities)
        ]
        self._max_length, self._shape = max_length, (batch_size, num_kv_heads, head_dim)
        if all(n == max_length for n in self.capacity) and all(w is None for w in windows):
            shape = (num_slots, batch_size, num_kv_heads, max_length, head_dim)
            self.keys = torch.zeros(shape, dtype=dtype, device=device)
            self.values = torch.zeros(shape, dtype=dtype, device=device)
            # per-slot views, made once: an update is then two narrow + copy_ (fewer ops per decoded token)
            self._slot_keys = list(self.keys.unbind(0))
            self._slot_values = list(self.values.unbind(0))
        else:  # slots of different lengths: one tensor each (``keys``/``values`` are not one stack then)
            self.keys = self.values = None
            self._slot_keys = [torch.zeros(batch_size, num_kv_heads, n, head_dim, dtype=dtype, device=device)
                               for n in self.capacity]  # fmt: skip
            self._slot_values = [torch.zeros_like(k) for k in self._slot_keys]
        self.lengths: list[int] = [0] * num_slots  # tokens written to each slot
        self.held: list[int] = [0] * num_slots  # entries each slot holds (fewer once a window is full)
        self.key_positions = (
            torch.zeros(num_slots, batch_size, max_length, dtype=torch.long, device=device) if track_positions else None
        )

    # -- shape ---------------------------------------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        return len(self._slot_keys)

    @property
    def batch_size(self) -> int:
        return self._shape[0]

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def dtype(self) -> torch.dtype:
        return self._slot_keys[0].dtype

    @property
    def seq_length(self) -> int:
        return self.lengths[0]

    def get_seq_length(self, slot: int = 0) -> int:
        return self.lengths[slot]

    def evicted(self, slot: int) -> int:
        """How many of the slot's first tokens a full window has dropped (0 for full-attention slots)."""
        return 0 if self.windows[slot] is None else self.lengths[slot] - self.held[slot]

    @property
    def nbytes(self) -> int:
        extra = self.key_positions.numel() * self.key_positions.element_size() if self.key_positions is not None else 0
        return sum(k.numel() * k.element_size() for k in self._slot_keys) * 2 + extra

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token costs across all slots, per sequence (keys + values), once every window is full
        (a sliding-window slot then costs nothing more)."""
        b, kv, d = self._shape
        full = sum(w is None for w in self.windows)
        return 2 * full * kv * d * self._slot_keys[0].element_size()

    # -- use -----------------------------------------------------------------------------------------------------
    def update(
        self, slot: int, key: torch.Tensor, value: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``key``/``value`` ``(B, kv_heads, T, head_dim)`` to ``slot``; return the slot's cached k, v."""
        start = self.lengths[slot]
        end = start + key.shape[2]
        if end > self.max_length:
            raise ValueError(
                f"KV cache is full: slot {slot} holds {start} of {self.max_length} tokens and "
                f"{key.shape[2]} more were written. Make a larger cache (model.new_cache(batch_size, "
                f"max_length)) before decoding this far."
            )
        b, kv, d = self._shape
        if key.shape[:2] != (b, kv) or key.shape[-1] != d:
            raise ValueError(
                f"KV cache made for (batch, kv_heads, head_dim) = {(b, kv, d)} got keys of shape {tuple(key.shape)}"
            )
        # full-attention slots write after their length (a routed cache may rewind it); windowed ones after what
        # they hold
        held, n = (start if self.windows[slot] is None else self.held[slot]), key.shape[2]
        if held + n > self.capacity[slot] and self.windows[slot] is None:  # a slot sized below the length grows
            self._grow(slot, held + n)
        if held + n > self.capacity[slot]:  # a full window: keep its last entries
            out = self._write_window(slot, key, value)
        elif torch.is_grad_enabled():  # (False under no_grad and inference_mode)
            out = self._write_recorded(slot, held, key, value)
        else:  # the fast path: two copies into the slot's views, returned as views
            keys, values = self._slot_keys[slot], self._slot_values[slot]
            keys.narrow(2, held, n).copy_(key)
            values.narrow(2, held, n).copy_(value)
            out = keys.narrow(2, 0, held + n), values.narrow(2, 0, held + n)
            self.held[slot] = held + n
        if self.key_positions is not None:
            if positions is None:
                positions = torch.arange(start, end, device=key.device).expand(key.shape[0], -1)
            self.key_positions[slot, :, start:end].copy_(positions)
        self.lengths[slot] = end
        return out

    def cached(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values ``slot`` holds, ``(B, kv_heads, held, head_dim)`` views."""
        n = self.lengths[slot] if self.windows[slot] is None else self.held[slot]
        return self._slot_keys[slot].narrow(2, 0, n), self._slot_values[slot].narrow(2, 0, n)

    def _grow(self, slot: int, needed: int) -> None:
        """Reallocate a slot made smaller than ``max_length`` (e.g. a routed step's expected share of the tokens)
        to twice its size, or what is needed, up to ``max_length``; its entries are kept."""
        size = min(self.max_length, max(needed, 2 * self.capacity[slot]))
        for store in (self._slot_keys, self._slot_values):
            old = store[slot]
            new = old.new_zeros(*old.shape[:2], size, old.shape[3])
            new.narrow(2, 0, old.shape[2]).copy_(old)
            store[slot] = new
        self.capacity[slot] = size

    def grow(self, max_length: int) -> "KVCache":
        """Make room for ``max_length`` tokens (no-op when it has room already), every entry kept: the slots made
        for the whole length get the new length, sliding-window slots keep their window, routed slots made smaller
        keep their size (they grow on demand, now up to the new length). A cache carried from one ``generate`` to
        the next (transformers' ``past_key_values``) grows this way instead of refusing the longer conversation."""
        if not isinstance(max_length, int) or isinstance(max_length, bool):
            raise ValueError(f"KVCache.grow: max_length must be an int, got {max_length!r}")
        old = self._max_length
        if max_length <= old:
            return self
        sizes = [
            min(w, max_length) if w is not None else (max_length if cap == old else cap)
            for w, cap in zip(self.windows, self.capacity)
        ]
        keys, values = list(self._slot_keys), list(self._slot_values)
        self._max_length = max_length
        self.capacity = sizes
        stacked = all(n == max_length for n in sizes) and all(w is None for w in self.windows)
        b, kv, d = self._shape
        like = keys[0]
        if stacked:
            shape = (len(sizes), b, kv, max_length, d)
            self.keys = like.new_zeros(shape)
            self.values = like.new_zeros(shape)
            self._slot_keys, self._slot_values = list(self.keys.unbind(0)), list(self.values.unbind(0))
        else:
            self.keys = self.values = None
            self._slot_keys = [like.new_zeros(b, kv, n, d) for n in sizes]
            self._slot_values = [like.new_zeros(b, kv, n, d) for n in sizes]
        for store, previous in ((self._slot_keys, keys), (self._slot_values, values)):
            for new, held in zip(store, previous):
                new.narrow(2, 0, held.shape[2]).copy_(held)
        if self.key_positions is not None:
            positions = self.key_positions
            self.key_positions = positions.new_zeros(*positions.shape[:2], max_length)
            self.key_positions.narrow(2, 0, old).copy_(positions)
        return self

    def reorder(self, rows: torch.Tensor) -> "KVCache":
        """Row ``i`` takes the entries of row ``rows[i]`` in every slot (beam search continues the beams it keeps);
        the lengths are every row's, so they stay."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self._slot_keys[0].device)
        if rows.shape != (self.batch_size,):
            raise ValueError(f"KVCache.reorder: rows must be {self.batch_size} row indices, got {tuple(rows.shape)}")
        if self.keys is not None:
            self.keys.copy_(self.keys.index_select(1, rows))
            self.values.copy_(self.values.index_select(1, rows))
        else:
            for store in (self._slot_keys, self._slot_values):
                for tensor in store:
                    tensor.copy_(tensor.index_select(0, rows))
        if self.key_positions is not None:
            self.key_positions.copy_(self.key_positions.index_select(1, rows))
        return self

    def _slot(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        # writable in grad mode: the views made by ``unbind`` are not (autograd forbids modifying them)
        if self.keys is not None:
            return self.keys.select(0, slot), self.values.select(0, slot)
        return self._slot_keys[slot], self._slot_values[slot]

    def _write_recorded(
        self, slot: int, start: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`update` in grad mode: detached copies into fresh views of the slot, and the cached past followed
        by ``key``/``value`` themselves returned (a new tensor, which later writes to the cache leave unchanged)."""
        keys, values = self._slot(slot)
        n = key.shape[2]
        keys.narrow(2, start, n).copy_(key.detach())
        values.narrow(2, start, n).copy_(value.detach())
        self.held[slot] = start + n
        if start == 0:
            return key, value
        return torch.cat([keys.narrow(2, 0, start), key], dim=2), torch.cat([values.narrow(2, 0, start), value], dim=2)

    def _write_window(self, slot: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sliding-window slot past its window: the held entries followed by the new ones are returned (what the
        new queries may see), and the last ``capacity`` of them are kept."""
        keys, values = self._slot(slot)
        held, cap = self.held[slot], self.capacity[slot]
        past_k, past_v = keys.narrow(2, 0, held).clone(), values.narrow(2, 0, held).clone()
        all_k, all_v = torch.cat([past_k, key], dim=2), torch.cat([past_v, value], dim=2)
        keys.copy_(all_k[:, :, -cap:].detach())
        values.copy_(all_v[:, :, -cap:].detach())
        self.held[slot] = cap
        return all_k, all_v

    def positions(self, slot: int) -> torch.Tensor:
        """Sequence index of every cached entry of ``slot``, ``(B, length)`` (needs ``track_positions``)."""
        if self.key_positions is None:
            raise ValueError("this KVCache was made without track_positions=True")
        return self.key_positions[slot, :, : self.lengths[slot]]

    def reset(self) -> "KVCache":
        """Forget every entry (the memory is kept for the next sequence)."""
        self.lengths = [0] * self.num_slots
        self.held = [0] * self.num_slots
        return self

    def crop(self, length: int) -> "KVCache":
        """Drop entries beyond ``length`` in every slot (e.g. to rewind rejected draft tokens). A sliding-window
        slot cannot rewind past the tokens its window has already dropped."""
        for slot, n in enumerate(self.lengths):
            drop = n - min(n, length)
            if self.windows[slot] is not None and drop > self.held[slot]:
                raise ValueError(
                    f"cannot crop slot {slot} (window {self.windows[slot]}) to {length} tokens: it holds only its last "
                    f"{self.held[slot]} of {n}; crop to at least {n - self.held[slot]}, or make the cache without "
                    "windows (model.new_cache(..., windowed=False))"
                )
        for slot, n in enumerate(self.lengths):
            drop = n - min(n, length)
            self.held[slot] -= drop
            self.lengths[slot] = n - drop
        return self

    def __repr__(self) -> str:
        b, kv, d = self._shape
        window = f", windows={self.windows}" if any(w is not None for w in self.windows) else ""
        return (
            f"KVCache(slots={self.num_slots}, batch_size={b}, num_kv_heads={kv}, max_length={self.max_length}, "
            f"head_dim={d}, dtype={self.dtype}, seq_length={self.seq_length}{window})"
        )
