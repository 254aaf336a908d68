"""How the ingress turns bodies into prompt token ids (real tokenizer of the tiny model)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from slidingserve.models.tiny import ensure_tiny_model
from slidingserve.serve import openai_api as oa
from slidingserve.serve.config import load_serve_config
from slidingserve.serve.ingress import HTTPError, IngressService
from slidingserve.slo.tiers import load_tiers


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(ensure_tiny_model()))


def service(tok) -> IngressService:
    return IngressService(load_serve_config({"auth": {"keys_env": None}}), load_tiers(), None, tok)


def test_text_and_token_prompts(tokenizer):
    svc = service(tokenizer)
    assert svc._prompt_ids(oa.CompletionBody(prompt="ka ko ri")) == tokenizer.encode("ka ko ri")
    assert svc._prompt_ids(oa.CompletionBody(prompt=[5, 6, 7])) == [5, 6, 7]
    with pytest.raises(HTTPError) as info:
        svc._prompt_ids(oa.CompletionBody(prompt=[5, len(tokenizer)]))
    assert info.value.status == 400 and str(len(tokenizer)) in info.value.message


def test_chat_uses_the_template_when_the_tokenizer_has_one(tokenizer):
    body = oa.ChatBody(messages=[{"role": "user", "content": "hi"}])
    plain = service(tokenizer)._prompt_ids(body)
    assert plain == tokenizer.encode("user: hi\nassistant:")
    templated = AutoTokenizer.from_pretrained(str(ensure_tiny_model()))
    templated.chat_template = (
        "<s>{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}[assistant]"
    )
    ids = service(templated)._prompt_ids(body)
    assert ids == templated.encode("<s>[user] hi [assistant]", add_special_tokens=False)
    assert all(isinstance(i, int) for i in ids)
