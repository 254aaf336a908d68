"""A small random-weight Llama with a locally trained tokenizer, built once and cached.

Nothing is downloaded: the weights come from a seeded ``LlamaForCausalLM`` initialisation and
the tokenizer is a byte-level BPE trained with ``tokenizers`` on seeded pseudo-text. The model
directory loads with ``transformers.AutoTokenizer``/``AutoModelForCausalLM`` and in vLLM.

The cache key is a hash of the dimensions, so different ``**dims`` never share a directory.
A build writes into a temporary sibling directory and renames it into place, so concurrent
builders (test workers, engine processes) never see a half-written model.

The tokenizer ships a small chat template (``CHAT_TEMPLATE``) so chat completions work as on
any instruction-tuned model. The key also holds ``TINY_MODEL_FORMAT``: a build recipe that
changes what the directory holds (the template came with format 2; the weights and tokens are
those of format 1) gets a new directory, and a cached one is never rewritten in place, so code
of different formats can share a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

TINY_MODEL_FORMAT = 2  # bump when the build recipe changes (new cache dir); 2: chat template
_SYLLABLES = tuple(
    "ka ko ri su te na mo lu pe zi an el in on ur ba de fi go ha ju ke li ma ne "  # noqa: SIM905
    "po qu ra se ti vo wa xe ya zo th sh ch st pr tr".split()
)
_SPECIALS = ("<unk>", "<s>", "</s>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}"
    "\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True, slots=True)
class TinyDims:
    """Shape of the tiny Llama. Every field is validated in ``__post_init__``."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 688
    vocab_size: int = 8192
    max_position: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"tiny model: {f.name} must be an int (got {value!r})")
            if f.name != "seed" and value <= 0:
                raise ValueError(f"tiny model: {f.name} must be > 0 (got {value!r})")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"tiny model: hidden_size {self.hidden_size} is not a multiple of "
                f"num_heads {self.num_heads}"
            )
        if self.hidden_size // self.num_heads < 32:
            raise ValueError(
                f"tiny model: head_dim {self.hidden_size // self.num_heads} < 32 "
                "(vLLM's CPU attention needs head_dim >= 32)"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"tiny model: num_heads {self.num_heads} is not a multiple of "
                f"num_kv_heads {self.num_kv_heads}"
            )
        if self.vocab_size < 512:
            raise ValueError(f"tiny model: vocab_size must be >= 512 (got {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def key(self) -> str:
        blob = json.dumps({"format": TINY_MODEL_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_data_dir() -> Path:
    """``$SLIDINGSERVE_DATA_DIR`` if set, else ``~/.cache/slidingserve`` (read at call time)."""
    env = os.environ.get("SLIDINGSERVE_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "slidingserve"


def ensure_tiny_model(root: Path | None = None, **dims: int) -> Path:
    """Path of the tiny model for ``dims``, building it under ``root/models/`` on first use."""
    try:
        spec = TinyDims(**dims)
    except TypeError as exc:
        known = ", ".join(f.name for f in fields(TinyDims))
        raise ValueError(
            f"tiny model: bad dimension in {sorted(dims)} (known: {known}): {exc}"
        ) from None
    base = (root if root is not None else default_data_dir()) / "models"
    target = base / f"tiny-llama-{spec.key()}"
    if (target / "config.json").is_file():
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=base))
    try:
        _build(spec, tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def pseudo_text(num_words: int, seed: int) -> list[str]:
    """Seeded pseudo-words (1-4 syllables each) to train the tokenizer and write prompts."""
    rng = random.Random(seed)
    return ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(num_words)]


def _build(spec: TinyDims, out: Path) -> None:
    _build_tokenizer(spec, out)
    _build_weights(spec, out)
    (out / "slidingserve_tiny.json").write_text(
        json.dumps({"format": TINY_MODEL_FORMAT, **asdict(spec)}, indent=2, sort_keys=True)
    )


def _build_tokenizer(spec: TinyDims, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = pseudo_text(60_000, spec.seed)
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.model_max_length = spec.max_position
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"  # where every reader looks for the template
    config = json.loads(config_path.read_text())
    if config.get("chat_template") != CHAT_TEMPLATE:
        config["chat_template"] = CHAT_TEMPLATE
        config_path.write_text(json.dumps(config, indent=2))


def _build_weights(spec: TinyDims, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        vocab_size=spec.vocab_size,
        max_position_embeddings=spec.max_position,
        bos_token_id=_SPECIALS.index("<s>"),
        eos_token_id=_SPECIALS.index("</s>"),
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config).bfloat16()
    model.save_pretrained(str(out), safe_serialization=True)
