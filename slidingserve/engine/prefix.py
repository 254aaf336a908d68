"""What vLLM's prefix cache means for the policy's view of a request.

With prefix caching on, admission starts a request from the longest cached prefix of its
prompt (``KVCacheManager.get_computed_blocks``: whole blocks, at most ``num_tokens - 1``), so a
new or preempted request begins with ``num_computed_tokens > 0``, and running requests may hold
the same blocks. ``PrefixProbe`` answers, between steps and without side effects:

* ``cached_tokens``: the prefix a waiting request would start from if admitted now, so the
  policy plans its chunk and predicts its attention context from there (the hit is looked up
  again at admission, where an allocation earlier in the same step may have evicted part of it);
* ``shared_blocks``: the blocks a running request holds that other requests hold too, which
  preempting it would not free.

The policy's block need for a waiting request stays ``ceil((cached + n) / block_size)``: its
cached blocks count as taken from the free pool. That is exact for cached blocks nobody holds
(vLLM counts them as free until a request takes them) and an over-estimate for blocks that
running requests hold, so a plan never asks for more blocks than are free.
"""

from __future__ import annotations

from typing import Any


class PrefixProbe:
    """Prefix-cache lookups on a live ``KVCacheManager`` (prefix caching on)."""

    def __init__(self, kv_cache_manager: Any):
        self.manager = kv_cache_manager
        self.coordinator = kv_cache_manager.coordinator

    def cached_tokens(self, request: Any) -> int:
        """Tokens of ``request``'s prompt the cache holds, as admission would count them
        (``get_computed_blocks`` without its KV-event side effect)."""
        if not self.manager.prefix_cache_lookup_enabled(request):
            return 0
        _, hit, _ = self.coordinator.find_longest_cache_hit(
            request.block_hashes, request.num_tokens - 1
        )
        return int(hit)

    def shared_blocks(self, request: Any) -> int:
        """Blocks of a running ``request`` that another request also holds."""
        blocks = self.coordinator.get_blocks(request.request_id)
        return sum(1 for b in blocks[0] if b.ref_cnt > 1) if blocks else 0
