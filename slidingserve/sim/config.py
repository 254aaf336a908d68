"""Simulator configuration and the default KV-cache size."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from slidingserve.latency import RooflineConfig
from slidingserve.policy import HostLimits

GIB = 1024**3


def default_kv_blocks(
    model: RooflineConfig | None = None,
    block_size: int = 16,
    gpu_memory_bytes: float = 80 * GIB,
    memory_utilization: float = 0.9,
    reserve_bytes: float = 2 * GIB,
) -> int:
    """KV blocks an engine like vLLM gets for ``model`` on one 80 GB H100.

    (GPU memory x utilization - weights - activation reserve) / (KV bytes per token x block).
    For the default Llama-3-8B-class model: (72 GiB - 16 GB - 2 GiB) / 128 KiB per token,
    about 440k tokens, 27.5k blocks of 16.
    """
    m = model or RooflineConfig()
    kv_bytes_per_token = 2 * m.num_layers * m.num_kv_heads * m.head_dim * m.bytes_per_param
    free = gpu_memory_bytes * memory_utilization - m.num_params * m.bytes_per_param - reserve_bytes
    if free <= 0:
        raise ValueError(
            f"model weights ({m.num_params * m.bytes_per_param:.3g} B) leave no KV memory"
        )
    return int(free // (kv_bytes_per_token * block_size))


class SimConfig(BaseModel):
    """One simulated deployment: replicas, router, engine limits, KV cache, run controls."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    replicas: int = Field(default=1, ge=1)
    router: str = "round-robin"
    block_size: int = Field(default=16, ge=1)
    num_blocks: int | None = Field(default=None, ge=1)  # None: default_kv_blocks()
    max_num_seqs: int = Field(default=256, ge=1)
    max_batch_tokens: int = Field(default=16384, ge=1)
    max_model_len: int = Field(default=32768, ge=1)
    # Collapse runs of identical decode-only steps (see slidingserve/sim/fastforward.py).
    fast_forward: bool = True
    fast_forward_max_steps: int = Field(default=4096, ge=1)
    # Run decode-only steps without calling a policy that declares their plan fixed
    # (``Policy.fixed_decode_steps``; see slidingserve/sim/fastforward.py).
    skip_fixed_plans: bool = True
    record_token_times: bool = False  # keep every token's time in the records (memory heavy)
    # Stop at (last arrival + drain_s); requests unfinished then count as violations.
    # None: run until every request finishes.
    drain_s: float | None = Field(default=None, ge=0)

    def kv_blocks(self) -> int:
        return (
            self.num_blocks
            if self.num_blocks is not None
            else default_kv_blocks(block_size=self.block_size)
        )

    def limits(self) -> HostLimits:
        return HostLimits(self.max_num_seqs, self.max_batch_tokens, self.max_model_len)
