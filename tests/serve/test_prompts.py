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


def test_a_message_without_a_role_is_a_400(tokenizer):
    """vLLM's message union admits shapes without ``role`` (Harmony's ``author``); the chat
    template needs one: a 400 naming the message, not a KeyError (found by the fuzzer)."""
    body = oa.ChatCompletionBody(messages=[{"role": "user", "content": "hi"},
                                           {"author": {"role": "tool"}}])
    with pytest.raises(HTTPError) as info:
        oa.chat_prompt(body, tokenizer)
    assert info.value.status == 400 and info.value.message.startswith("messages[1]: ")


@pytest.mark.parametrize("body", [{"messages": True}, {"messages": 3}])
def test_a_body_of_the_wrong_shape_fails_validation(body):
    """vLLM's own before-validators iterate ``messages`` and raise TypeError on a bool or an
    int; the ingress's body model turns that into a validation error (a 400), where vLLM's
    model lets the TypeError through (a 500)."""
    from pydantic import ValidationError

    with pytest.raises(TypeError):
        ChatCompletionRequest.model_validate(body)
    with pytest.raises(ValidationError, match="malformed request body"):
        oa.ChatCompletionBody.model_validate(body)
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValidationError, match="top_k: expected a number, got a boolean"):
        oa.ChatCompletionBody.model_validate({"messages": hi, "top_k": True})  # vLLM reads 1
    with pytest.raises(ValidationError, match="max_tokens: expected a number"):
        oa.CompletionBody.model_validate({"prompt": "a", "max_tokens": False})
    assert oa.ChatCompletionBody.model_validate({"messages": hi, "logprobs": True}).logprobs
    ok = oa.ChatCompletionBody.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(ok, ChatCompletionRequest)
    assert isinstance(oa.CompletionBody.model_validate({"prompt": "a"}), CompletionRequest)


def test_engine_refusals_of_parameters_are_client_errors():
    """vLLM's input processor checks some parameters only when the engine takes the request;
    those refusals (``VLLMClientError``) end the stream as a 400 with vLLM's message, anything
    else stays a 500."""
    from vllm.exceptions import VLLMValidationError

    from slidingserve.serve.engine_host import _client_error

    err = _client_error(VLLMValidationError("routed_experts_prompt_start must be between 0 "
                                            "and the prompt length (3), inclusive.",
                                            parameter="routed_experts_prompt_start", value=9))
    assert err is not None and err.status == 400
    assert err.param == "routed_experts_prompt_start"
    assert err.message.startswith("routed_experts_prompt_start must be")
    assert _client_error(RuntimeError("engine dead")) is None


def test_odd_content_parts_and_contradicting_template_options(tokenizer):
    """A bare string content part is text (as vLLM reads it); a part of another type, and
    template options transformers refuses together, are 400s (all found by the fuzzer)."""
    text = oa.chat_prompt(oa.ChatCompletionBody(
        messages=[{"role": "user", "content": ["ka ko", {"type": "text", "text": "ri"}]}]),
        tokenizer).text
    assert "ka ko\nri" in text
    both = oa.ChatCompletionBody(messages=[{"role": "user", "content": "hi"},
                                           {"role": "assistant", "content": "ka"}],
                                 continue_final_message=True)
    both.add_generation_prompt = True  # vLLM's validator refuses the pair only as sent
    with pytest.raises(HTTPError) as info:
        oa.chat_prompt(both, tokenizer)
    assert info.value.status == 400 and "chat template error" in info.value.message
