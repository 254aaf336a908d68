"""Preemption counts only the blocks a victim alone holds (a shared cached prefix stays)."""

from __future__ import annotations

from policy_factories import BLOCK, decoding, waiting

from slidingserve.policy.packing import BudgetPacker, make_room
from slidingserve.policy.types import KVState


def test_make_room_counts_only_unshared_blocks_of_victims() -> None:
    alone = decoding(1, prompt=4 * BLOCK)  # 4 blocks (its last one partly filled)
    sharing = decoding(2, prompt=4 * BLOCK)
    sharing.num_shared_blocks = 3  # its prefix blocks are also another request's
    assert (alone.freeable_blocks, sharing.freeable_blocks) == (4, 1)
    new = waiting(3, prompt=3 * BLOCK)
    packer = BudgetPacker(512, 8, KVState(free_blocks=0, total_blocks=8, block_size=BLOCK), 4096)
    # the victim order puts ``sharing`` last: it goes first, but frees one block, not four
    assert make_room(packer, new, 3 * BLOCK, [alone, sharing])
    assert packer.preempt == [2, 1]
    assert packer.free_blocks == 5


def test_make_room_gives_up_when_shared_blocks_leave_too_little() -> None:
    sharing = decoding(2, prompt=4 * BLOCK)
    sharing.num_shared_blocks = 4
    packer = BudgetPacker(512, 8, KVState(free_blocks=1, total_blocks=8, block_size=BLOCK), 4096)
    assert not make_room(packer, waiting(3, prompt=2 * BLOCK), 2 * BLOCK, [sharing])
    assert packer.preempt == []
