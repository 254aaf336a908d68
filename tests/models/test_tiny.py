"""The tiny model builds offline, is cached, and loads with transformers."""

from __future__ import annotations

from pathlib import Path

import pytest

from slidingserve.models import cpu_engine_kwargs, ensure_tiny_model, pseudo_text


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("data"))


def test_builds_once_and_is_cached(model_dir: Path) -> None:
    root = model_dir.parent.parent
    mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(root) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".building-")]


def test_tokenizer_round_trips_offline(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    text = " ".join(pseudo_text(50, seed=7))
    ids = tok(text)["input_ids"]
    assert 0 < len(ids) < 4 * 50
    assert tok.decode(ids) == text
    assert len(tok) == 8192
    assert tok.eos_token == "</s>"


def test_weights_run_in_transformers(model_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (256, 4, 4)
    assert cfg.max_position_embeddings == 4096
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    logits = model(torch.tensor([[5, 6, 7, 8]])).logits
    assert logits.shape == (1, 4, 8192)
    assert torch.isfinite(logits.float()).all()


def test_dims_change_the_cache_key(tmp_path: Path) -> None:
    small = ensure_tiny_model(tmp_path, num_layers=1, vocab_size=1024, max_position=512)
    assert small.name != ensure_tiny_model.__name__
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(small).num_hidden_layers == 1


@pytest.mark.parametrize(
    ("dims", "needle"),
    [
        ({"hidden_size": 258}, "not a multiple of num_heads"),
        ({"hidden_size": 64}, "head_dim 16"),
        ({"num_layers": 0}, r"num_layers must be > 0 \(got 0\)"),
        ({"depth": 3}, "depth"),
    ],
)
def test_bad_dims_are_named(tmp_path: Path, dims: dict[str, int], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ensure_tiny_model(tmp_path, **dims)


def test_engine_kwargs_are_small_and_validated(model_dir: Path) -> None:
    kw = cpu_engine_kwargs(model_dir, max_num_seqs=8)
    assert kw["model"] == str(model_dir) and kw["max_num_seqs"] == 8
    assert kw["kv_cache_memory_bytes"] <= 256 * 1024 * 1024
    with pytest.raises(ValueError, match="max_model_len must be a positive int"):
        cpu_engine_kwargs(model_dir, max_model_len=0)
