"""Profile a Llama-3-8B-shaped model with plain PyTorch on a GPU: mixed prefill-chunk/decode steps.

The idea: build the model's real weights (random, bf16) and a real KV cache, then time whole
engine steps (embedding, 32 decoder layers, final norm, LM head and greedy sampling on each
sequence's last token) for a designed sweep of batch shapes, the way vLLM runs them:

  * all tokens of a step (every prefill chunk and every decode) go through the dense layers as
    one flat batch of ``total_tokens`` rows;
  * attention is one variable-length FlashAttention-2 call per layer
    (``aten._flash_attention_forward`` with cumulative sequence lengths, GQA, causal mask
    aligned bottom-right), so a chunk of ``c`` tokens after ``d`` computed ones attends to
    ``d + i + 1`` keys and a decode of context ``n`` attends to ``n`` keys;
  * the KV cache is one preallocated pool per layer; each step lays its requests out
    contiguously in it (a per-request contiguous cache), writes the new tokens' K/V into their
    slots (``index_copy_``, like vLLM's ``reshape_and_cache``) and reads the earlier ones.

Each shape is timed with CUDA events around the step: warm-up runs, then repeats, median kept.
The host-side batch preparation (building index tensors) is outside the timed region.

Two modes:
  profile  (on the GPU box; needs only torch and numpy)  writes ``raw.jsonl``: one line per shape
           with its chunks, decode contexts and every repeat's time.
  convert  (here; needs the project)  turns ``raw.jsonl`` into a step trace
           (``predictor.steptrace``).

  python3 predictor/torch_profile.py profile --out DIR [--max-seconds S] [--dims tiny]
  python -m predictor.torch_profile convert RAW.jsonl STEPS.csv --hardware "NVIDIA H100 80GB HBM3"
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# ---- model dimensions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelDims:
    """Decoder-only transformer shape (defaults: Llama-3-8B)."""

    num_layers: int = 32
    hidden: int = 4096
    num_q_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    mlp: int = 14336
    vocab: int = 128256

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelDims.{name} must be a positive int, got {value!r}")
        if self.num_q_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelDims.num_q_heads={self.num_q_heads} must be a multiple of "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self.num_q_heads * self.head_dim != self.hidden:
            raise ValueError(
                f"ModelDims: num_q_heads*head_dim = {self.num_q_heads * self.head_dim} "
                f"!= hidden={self.hidden}"
            )

    @property
    def kv_bytes_per_token(self) -> int:  # bf16 K and V over all layers
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 2

    def num_params(self) -> int:
        h, kv = self.hidden, self.num_kv_heads * self.head_dim
        per_layer = h * (h + 2 * kv) + h * h + 3 * h * self.mlp + 2 * h
        return self.num_layers * per_layer + 2 * self.vocab * h + h


DIMS = {
    "llama3-8b": ModelDims(),
    "tiny": ModelDims(
        num_layers=2, hidden=256, num_q_heads=4, num_kv_heads=2, head_dim=64, mlp=512, vocab=1000
    ),
}

# ---- batch shapes and the sweep -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One engine step: prefill chunks (tokens, already computed) and decode context lengths."""

    prefill: tuple[tuple[int, int], ...]
    decode_ctx: tuple[int, ...]
    group: str = ""

    @property
    def total_tokens(self) -> int:
        return sum(c for c, _ in self.prefill) + len(self.decode_ctx)

    @property
    def kv_tokens(self) -> int:  # KV slots the step occupies (every request's full context)
        return sum(c + d for c, d in self.prefill) + sum(self.decode_ctx)


@dataclass(frozen=True, slots=True)
class SweepBounds:
    max_tokens: int = 16384  # tokens per step (vLLM's max_num_batched_tokens)
    kv_capacity: int = 400_000  # KV tokens the pool holds
    max_model_len: int = 16384


CHUNKS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
DONE = (0, 256, 1024, 2048, 4096, 8192)
DECODES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 224, 256)
CTX = (128, 256, 512, 1024, 2048, 4096, 8192)


def _decode_ctx(rng: random.Random, n: int, mean: int, spread: bool) -> tuple[int, ...]:
    if not spread:
        return (mean,) * n
    return tuple(max(16, int(mean * rng.uniform(0.5, 1.5))) for _ in range(n))


def design_sweep(bounds: SweepBounds, seed: int = 0, n_mixed: int = 700) -> list[Step]:
    """The designed sweep: decode-only and prefill-only grids, then random mixed batches.

    Every step fits the bounds: at most ``max_tokens`` tokens, at most ``kv_capacity`` KV slots,
    no request longer than ``max_model_len``. The result is shuffled (seeded) so a run cut short
    by its time limit still covers every group.
    """
    rng = random.Random(seed)
    steps: list[Step] = []
    for n in DECODES:
        for ctx in CTX:
            for spread in (False, True):
                steps.append(Step((), _decode_ctx(rng, n, ctx, spread), "decode"))
    for chunk in CHUNKS:
        for done in DONE:
            steps.append(Step(((chunk, done),), (), "prefill1"))
    for _ in range(80):
        k = rng.randint(2, 4)
        steps.append(
            Step(tuple((rng.choice(CHUNKS), rng.choice(DONE)) for _ in range(k)), (), "prefillN")
        )
    for _ in range(n_mixed):
        k = rng.choices((0, 1, 2, 3, 4), weights=(1, 4, 2, 1, 1))[0]
        prefill = tuple((rng.choice(CHUNKS), rng.choice(DONE)) for _ in range(k))
        n = rng.choice(DECODES)
        decode = _decode_ctx(rng, n, rng.choice(CTX), spread=True)
        steps.append(Step(prefill, decode, "mixed"))
    ok = [
        s
        for s in steps
        if 0 < s.total_tokens <= bounds.max_tokens
        and s.kv_tokens <= bounds.kv_capacity
        and all(c + d <= bounds.max_model_len for c, d in s.prefill)
        and all(c <= bounds.max_model_len for c in s.decode_ctx)
    ]
    rng.shuffle(ok)
    return ok


# ---- the model ----------------------------------------------------------------------


class Llama:
    """Random-weight Llama-shaped decoder with a KV pool, running one flat batch per step."""

    def __init__(
        self,
        dims: ModelDims,
        device: str,
        kv_capacity: int,
        seed: int = 0,
        attention: str = "flash",
    ):
        import torch

        self.torch = torch
        self.dims, self.device = dims, device
        self.dtype = torch.bfloat16
        g = torch.Generator(device=device).manual_seed(seed)
        d = dims
        kv = d.num_kv_heads * d.head_dim

        def w(*shape: int) -> Any:
            std = 1.0 / math.sqrt(shape[-1])
            return torch.randn(*shape, generator=g, device=device, dtype=self.dtype) * std

        self.embed = w(d.vocab, d.hidden)
        self.layers = [
            {
                "ln1": torch.ones(d.hidden, device=device, dtype=self.dtype),
                "qkv": w(d.hidden + 2 * kv, d.hidden),
                "o": w(d.hidden, d.hidden),
                "ln2": torch.ones(d.hidden, device=device, dtype=self.dtype),
                "gate_up": w(2 * d.mlp, d.hidden),
                "down": w(d.hidden, d.mlp),
            }
            for _ in range(d.num_layers)
        ]
        self.norm = torch.ones(d.hidden, device=device, dtype=self.dtype)
        self.lm_head = w(d.vocab, d.hidden)
        # KV pool: (2, layers, slots, kv_heads, head_dim), filled with random "earlier" K/V.
        kv_shape = (2, d.num_layers, kv_capacity, d.num_kv_heads, d.head_dim)
        self.kv = torch.randn(kv_shape, generator=g, device=device, dtype=self.dtype)
        self.kv_capacity = kv_capacity
        inv = 1.0 / (
            500000.0 ** (torch.arange(0, d.head_dim, 2, device=device).float() / d.head_dim)
        )
        ang = torch.outer(torch.arange(32768, device=device).float(), inv)
        self.cos, self.sin = ang.cos().to(self.dtype), ang.sin().to(self.dtype)
        self.attend: Callable[..., Any] = {"flash": self._flash, "sdpa": self._sdpa_loop}[attention]
        self.attention = attention

    # -- per-step inputs (host side, untimed) --
    def prepare(self, step: Step, seed: int = 0) -> dict[str, Any]:
        torch = self.torch
        q_lens = [c for c, _ in step.prefill] + [1] * len(step.decode_ctx)
        k_lens = [c + d for c, d in step.prefill] + list(step.decode_ctx)
        if sum(k_lens) > self.kv_capacity:
            raise ValueError(f"step needs {sum(k_lens)} KV slots, pool holds {self.kv_capacity}")
        cu_q = np.concatenate([[0], np.cumsum(q_lens)])
        cu_k = np.concatenate([[0], np.cumsum(k_lens)])
        pos = np.concatenate([np.arange(k - q, k) for q, k in zip(q_lens, k_lens, strict=True)])
        slots = np.concatenate(
            [
                cu_k[i] + np.arange(k - q, k)
                for i, (q, k) in enumerate(zip(q_lens, k_lens, strict=True))
            ]
        )
        rng = np.random.default_rng(seed)

        def t(a: np.ndarray, dtype: Any) -> Any:
            return torch.as_tensor(a, dtype=dtype, device=self.device)

        return {
            "ids": t(rng.integers(0, self.dims.vocab, size=int(cu_q[-1])), torch.long),
            "pos": t(pos, torch.long),
            "slots": t(slots, torch.long),
            "cu_q": t(cu_q, torch.int32),
            "cu_k": t(cu_k, torch.int32),
            "max_q": max(q_lens),
            "max_k": max(k_lens),
            "n_k": int(cu_k[-1]),
            "last": t(cu_q[1:] - 1, torch.long),
            "q_lens": q_lens,
            "k_lens": k_lens,
        }

    # -- attention backends: q (T, Hq, D); k, v (n_k, Hkv, D) packed per request --
    def _flash(self, q: Any, k: Any, v: Any, b: dict[str, Any]) -> Any:
        out = self.torch.ops.aten._flash_attention_forward(
            q,
            k,
            v,
            b["cu_q"],
            b["cu_k"],
            b["max_q"],
            b["max_k"],
            0.0,
            True,
            False,
            scale=1.0 / math.sqrt(self.dims.head_dim),
        )
        return out[0]

    def _sdpa_loop(self, q: Any, k: Any, v: Any, b: dict[str, Any]) -> Any:
        """Reference (and CPU) attention: one SDPA call per request, explicit bottom-right mask."""
        return attention_reference(self.torch, q, k, v, b["q_lens"], b["k_lens"])

    def _rope(self, x: Any, cos: Any, sin: Any) -> Any:
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return self.torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def forward(self, b: dict[str, Any]) -> Any:
        torch, d = self.torch, self.dims
        F = torch.nn.functional
        kvd = d.num_kv_heads * d.head_dim
        h = self.embed[b["ids"]]
        n_k = b["n_k"]
        cos, sin = self.cos[b["pos"]][:, None, :], self.sin[b["pos"]][:, None, :]
        for i, L in enumerate(self.layers):
            x = F.rms_norm(h, (d.hidden,), L["ln1"], 1e-5)
            q, k, v = F.linear(x, L["qkv"]).split([d.hidden, kvd, kvd], dim=-1)
            q = self._rope(q.view(-1, d.num_q_heads, d.head_dim), cos, sin)
            k = self._rope(k.view(-1, d.num_kv_heads, d.head_dim), cos, sin)
            kc, vc = self.kv[0, i, :n_k], self.kv[1, i, :n_k]
            kc.index_copy_(0, b["slots"], k)
            vc.index_copy_(0, b["slots"], v.view(-1, d.num_kv_heads, d.head_dim))
            a = self.attend(q, kc, vc, b)
            h = h + F.linear(a.reshape(-1, d.hidden), L["o"])
            x = F.rms_norm(h, (d.hidden,), L["ln2"], 1e-5)
            gate, up = F.linear(x, L["gate_up"]).chunk(2, dim=-1)
            h = h + F.linear(F.silu(gate) * up, L["down"])
        x = F.rms_norm(h[b["last"]], (d.hidden,), self.norm, 1e-5)
        return F.linear(x, self.lm_head).argmax(dim=-1)


def attention_reference(
    torch: Any, q: Any, k: Any, v: Any, q_lens: Sequence[int], k_lens: Sequence[int]
) -> Any:
    """Per-request attention with an explicit causal mask aligned bottom-right (query i of a
    request with q queries and n keys sees keys 0 .. n - q + i)."""
    F = torch.nn.functional
    outs, qo, ko = [], 0, 0
    group = q.shape[1] // k.shape[1]
    for ql, kl in zip(q_lens, k_lens, strict=True):
        qi = q[qo : qo + ql].transpose(0, 1)
        ki = k[ko : ko + kl].repeat_interleave(group, dim=1).transpose(0, 1)
        vi = v[ko : ko + kl].repeat_interleave(group, dim=1).transpose(0, 1)
        mask = (
            torch.arange(kl, device=q.device)[None, :]
            <= (kl - ql + torch.arange(ql, device=q.device))[:, None]
        )
        outs.append(F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask).transpose(0, 1))
        qo, ko = qo + ql, ko + kl
    return torch.cat(outs, dim=0)


# ---- timing -----------------------------------------------------------------------------------


def time_step(model: Llama, b: dict[str, Any], warmup: int, repeats: int) -> list[float]:
    """Seconds per run of one step, ``repeats`` times after ``warmup`` runs (CUDA events on GPU)."""
    torch = model.torch
    cuda = model.device.startswith("cuda")
    times = []
    with torch.inference_mode():
        for r in range(warmup + repeats):
            if cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                model.forward(b)
                end.record()
                end.synchronize()
                dt = start.elapsed_time(end) / 1e3
            else:
                t0 = time.perf_counter()
                model.forward(b)
                dt = time.perf_counter() - t0
            if r >= warmup:
                times.append(dt)
    return times


def time_graph(model: Llama, b: dict[str, Any], repeats: int) -> list[float]:
    """Seconds per replay of the step captured as one CUDA graph (vLLM replays graphs for small
    batches); call after ``time_step`` has warmed the step up eagerly. Each capture gets its own
    memory pool, freed with the graph (the H100 run of 2026-11-25 shared one pool across deleted
    graphs and hit an allocator assertion at the second capture; this form is not yet re-run)."""
    torch = model.torch
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode():
        with torch.cuda.graph(graph):
            model.forward(b)
        graph.replay()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    del graph
    return times


def check_attention(model: Llama, seed: int = 1) -> float:
    """Max relative error of the model's attention vs the per-request reference on a mixed batch."""
    torch, d = model.torch, model.dims
    step = Step(((37, 0), (64, 200), (5, 11)), (1, 130, 77))
    b = model.prepare(step)
    g = torch.Generator(device=model.device).manual_seed(seed)
    T, n_k = int(b["cu_q"][-1]), b["n_k"]

    def r(*s: int) -> Any:
        return torch.randn(*s, generator=g, device=model.device, dtype=model.dtype)

    q, k, v = (
        r(T, d.num_q_heads, d.head_dim),
        r(n_k, d.num_kv_heads, d.head_dim),
        r(n_k, d.num_kv_heads, d.head_dim),
    )
    with torch.inference_mode():
        got = model.attend(q, k, v, b).float()
        ref = attention_reference(
            torch, q.double(), k.double(), v.double(), b["q_lens"], b["k_lens"]
        )
    return float((got.double() - ref).norm() / ref.norm())


# ---- profile mode ----------------------------------------------------------------------


def run_profile(args: argparse.Namespace) -> int:
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dims = DIMS[args.dims]
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dims": asdict(dims),
        "params": dims.num_params(),
        "dtype": "bfloat16",
        "python": sys.version.split()[0],
    }
    print(json.dumps(env), flush=True)
    t0 = time.perf_counter()
    attention = args.attention or ("flash" if device == "cuda" else "sdpa")
    if device == "cuda":
        # KV pool: what is left after weights (allocated first), minus headroom for activations.
        weights = dims.num_params() * 2
        free, _ = torch.cuda.mem_get_info()
        budget = free - weights - int(args.headroom_gib * 2**30)
        kv_cap = min(args.kv_capacity, budget // dims.kv_bytes_per_token)
    else:
        kv_cap = args.kv_capacity
    model = Llama(dims, device, kv_cap, seed=args.seed, attention=attention)
    err = check_attention(model)
    env.update(attention=attention, kv_capacity=kv_cap, attention_rel_err=err)
    print(
        f"model built in {time.perf_counter() - t0:.1f}s; kv_capacity={kv_cap} tokens; "
        f"attention={attention} rel_err_vs_reference={err:.2e}",
        flush=True,
    )
    if not err < 2e-2:
        print(f"attention check failed: relative error {err}", flush=True)
        return 2
    bounds = SweepBounds(
        max_tokens=args.max_tokens, kv_capacity=kv_cap, max_model_len=args.max_model_len
    )
    steps = design_sweep(bounds, seed=args.seed, n_mixed=args.n_mixed)
    print(f"sweep: {len(steps)} steps", flush=True)
    with torch.inference_mode():  # global warm-up: kernels, cuBLAS handles, allocator
        for s in (Step(((512, 0),), (128,) * 8), Step(((8192, 0),), ()), Step((), (1024,) * 64)):
            if s.kv_tokens <= kv_cap and s.total_tokens <= args.max_tokens:
                time_step(model, model.prepare(s), 2, 0)
    (out / "env.json").write_text(json.dumps(env, indent=1))
    graph_ok = device == "cuda" and args.graph_max_tokens > 0
    start, done = time.perf_counter(), 0
    with (out / "raw.jsonl").open("w") as f:
        for i, s in enumerate(steps):
            if time.perf_counter() - start > args.max_seconds:
                print(f"time limit: stopped after {done} of {len(steps)} steps", flush=True)
                break
            b = model.prepare(s, seed=i)
            times = time_step(model, b, args.warmup, args.repeats)
            graph_times: list[float] | None = None
            if graph_ok and s.total_tokens <= args.graph_max_tokens:
                try:
                    graph_times = time_graph(model, b, args.repeats)
                except Exception as e:  # keep the eager numbers; stop trying graphs
                    print(f"CUDA graph capture failed, eager only from now on: {e}", flush=True)
                    graph_ok = False
            f.write(
                json.dumps(
                    {
                        "group": s.group,
                        "prefill": s.prefill,
                        "decode_ctx": s.decode_ctx,
                        "times_s": times,
                        "median_s": statistics.median(times),
                        "graph_times_s": graph_times,
                        "graph_median_s": graph_times and statistics.median(graph_times),
                    }
                )
                + "\n"
            )
            f.flush()
            done += 1
            if i % 100 == 0:
                print(
                    f"[{time.perf_counter() - start:6.1f}s] {i}: tokens={s.total_tokens} "
                    f"kv={s.kv_tokens} median={statistics.median(times) * 1e3:.2f} ms",
                    flush=True,
                )
    env.update(
        steps_done=done, steps_designed=len(steps), sweep_seconds=time.perf_counter() - start
    )
    (out / "env.json").write_text(json.dumps(env, indent=1))
    print(f"done: {done} steps in {time.perf_counter() - start:.1f}s", flush=True)
    return 0


# ---- convert mode -----------------------------------------------------------------------------


def read_raw(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n} is not JSON: {e}") from e
    return rows


def run_convert(args: argparse.Namespace) -> int:
    from predictor.steptrace import Provenance, StepTrace, write_steptrace
    from slidingserve.latency.features import BatchShape, features_of

    rows = read_raw(args.raw)
    if not rows:
        raise ValueError(f"{args.raw}: no profiled steps")
    shapes = [
        BatchShape(
            prefill=tuple((int(c), int(d)) for c, d in r["prefill"]),
            decode_ctx=tuple(int(c) for c in r["decode_ctx"]),
        )
        for r in rows
    ]
    X = np.array([features_of(s) for s in shapes])
    prov = Provenance(
        engine=args.engine, model=args.model, hardware=args.hardware, version=args.version
    )
    eager = [float(r["median_s"]) for r in rows]
    graph = [float(r["graph_median_s"]) if r.get("graph_median_s") else math.nan for r in rows]
    # latency_s: the CUDA-graph replay where one was timed (small steps, as vLLM runs them),
    # the eager step otherwise; --latency eager keeps eager timings throughout.
    y = [
        g if args.latency == "graph-small" and not math.isnan(g) else e
        for e, g in zip(eager, graph, strict=True)
    ]
    extra = {
        "latency_eager_s": eager,
        "latency_graph_s": graph,
        "sweep_group": [r["group"] for r in rows],
    }
    trace = StepTrace.from_arrays(X, y, prov, extra=extra)
    write_steptrace(trace, args.steps)
    print(f"wrote {len(trace)} steps to {args.steps}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("profile", help="time the sweep on this machine's GPU")
    p.add_argument("--out", required=True, help="directory for raw.jsonl and env.json")
    p.add_argument("--dims", choices=sorted(DIMS), default="llama3-8b")
    p.add_argument("--attention", choices=("flash", "sdpa"), default=None)
    p.add_argument("--max-seconds", type=float, default=400.0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=16384)
    p.add_argument("--max-model-len", type=int, default=16384)
    p.add_argument("--kv-capacity", type=int, default=400_000)
    p.add_argument("--headroom-gib", type=float, default=12.0)
    p.add_argument("--n-mixed", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--graph-max-tokens",
        type=int,
        default=512,
        help="also time steps of at most this many tokens as CUDA-graph replays (0: never)",
    )
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    c = sub.add_parser("convert", help="raw.jsonl -> step trace (CSV or Parquet)")
    c.add_argument("raw")
    c.add_argument("steps")
    c.add_argument("--engine", default="torch-eager")
    c.add_argument("--model", default="llama-3-8b-shape-random-bf16")
    c.add_argument("--hardware", required=True)
    c.add_argument("--version", required=True, help="e.g. 'torch 2.11.0+cu130'")
    c.add_argument("--latency", choices=("graph-small", "eager"), default="graph-small")
    args = ap.parse_args(argv)
    for name in ("max_seconds", "warmup", "repeats", "max_tokens", "kv_capacity", "n_mixed"):
        value = getattr(args, name, None)
        if value is not None and value < (1 if name == "repeats" else 0):
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 0 (repeats >= 1), got {value}")
    return run_profile(args) if args.mode == "profile" else run_convert(args)


if __name__ == "__main__":
    sys.exit(main())
