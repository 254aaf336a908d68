"""How the ingress turns bodies into prompt token ids (real tokenizer of the tiny model)."""

from __future__ import annotations

import shutil

import pytest
from transformers import AutoTokenizer
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest

from slidingserve.models.tiny import CHAT_TEMPLATE, ensure_tiny_model
from slidingserve.serve import openai_api as oa
from slidingserve.serve.openai_api import HTTPError


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(ensure_tiny_model()))


def ids(req, tok) -> list[list[int]]:
    return [p.token_ids for p in oa.completion_prompts(req, tok)]


def test_text_token_and_batched_prompts(tokenizer):
    assert ids(CompletionRequest(prompt="ka ko ri"), tokenizer) == [tokenizer.encode("ka ko ri")]
    assert ids(CompletionRequest(prompt=[5, 6, 7]), tokenizer) == [[5, 6, 7]]
    assert ids(CompletionRequest(prompt=["ka", "ko ri"]), tokenizer) == [
        tokenizer.encode("ka"), tokenizer.encode("ko ri")]
    assert ids(CompletionRequest(prompt=[[5, 6], [7]]), tokenizer) == [[5, 6], [7]]
    with pytest.raises(HTTPError) as info:
        ids(CompletionRequest(prompt=[5, len(tokenizer)]), tokenizer)
    assert info.value.status == 400 and str(len(tokenizer)) in info.value.message
    with pytest.raises(HTTPError) as info:
        ids(CompletionRequest(prompt=[[5], []]), tokenizer)
    assert info.value.param == "prompt" and "prompt[1]" in info.value.message


def test_echo_keeps_the_prompt_text(tokenizer):
    prompts = oa.completion_prompts(CompletionRequest(prompt=[5, 6], echo=True), tokenizer)
    assert prompts[0].text == tokenizer.decode([5, 6])


def test_chat_uses_the_tiny_models_template(tokenizer):
    assert tokenizer.chat_template == CHAT_TEMPLATE
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}])
    prompt = oa.chat_prompt(body, tokenizer)
    text = "<s><|user|>\nhi</s>\n<|assistant|>\n"
    assert prompt.text == text
    assert prompt.token_ids == tokenizer.encode(text, add_special_tokens=False)
    assert all(isinstance(i, int) for i in prompt.token_ids)


def test_content_parts_and_the_developer_role(tokenizer):
    parts = ChatCompletionRequest(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "ka"},
                                     {"type": "text", "text": "ko"}]},
    ])
    text = oa.chat_prompt(parts, tokenizer).text
    assert "<|system|>\nbe brief" in text  # no 'developer' in the template: system, as vLLM does
    assert "<|user|>\nka\nko</s>" in text  # text parts joined with newlines
    image = ChatCompletionRequest(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
    with pytest.raises(HTTPError) as info:
        oa.chat_prompt(image, tokenizer)
    assert info.value.status == 400 and "image_url" in info.value.message


def test_a_content_part_that_fails_its_schema_is_a_400(tokenizer):
    """pydantic checks a content-part array only as it is read: a part of no known shape is a
    400 naming the message, not a server error (found by the schema fuzzer)."""
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"},
                                           {"role": "user", "content": [{"": None}]}])
    with pytest.raises(HTTPError) as info:
        oa.chat_prompt(body, tokenizer)
    assert info.value.status == 400 and info.value.param == "messages"
    assert info.value.message.startswith("messages[1]: ")


def test_a_model_without_a_chat_template_is_a_400(tokenizer, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(ensure_tiny_model(), bare)
    tok = AutoTokenizer.from_pretrained(str(bare))
    tok.chat_template = None
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(HTTPError) as info:
        oa.chat_prompt(body, tok)
    assert info.value.status == 400 and info.value.message == oa.NO_CHAT_TEMPLATE
