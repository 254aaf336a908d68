"""The OpenAI protocol as vLLM's own server speaks it: requests, defaults, prompts, errors.

Request bodies are vLLM's models (``CompletionRequest``, ``ChatCompletionRequest``: what
``vllm serve`` accepts, unknown fields included, with its validators) and become
``SamplingParams`` through their own ``to_sampling_params``, with vLLM's defaults: the
model's ``generation_config.json`` sampling fields, and a chat ``max_tokens`` that is the rest
of the context. Errors have vLLM's shape ``{"error": {"message", "type", "param", "code"}}``.
SLO metadata never travels in the body: it comes from the ``x-slo-*`` headers.

What this module refuses that vLLM's server can do: beam search, prompt embeddings, a
completion ``suffix``, non-text content parts (the engine serves text models) and tool
calling (no tool parser runs here).
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, ValidatorFunctionWrapHandler, model_validator
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.exceptions import VLLMClientError

AnyRequest = CompletionRequest | ChatCompletionRequest


@functools.cache
def _number_fields(model: type[BaseModel]) -> frozenset[str]:
    """The top-level fields of ``model`` that take a number and not a boolean."""
    def numeric(tp: Any) -> bool:
        if tp is bool:
            return False
        if tp in (int, float):
            return True
        return any(numeric(a) for a in typing.get_args(tp))

    def takes_bool(tp: Any) -> bool:
        return tp is bool or any(takes_bool(a) for a in typing.get_args(tp))

    return frozenset(name for name, f in model.model_fields.items()
                     if numeric(f.annotation) and not takes_bool(f.annotation))


def _shape_errors_are_invalid(model: type[BaseModel], data: Any,
                              handler: ValidatorFunctionWrapHandler) -> Any:
    """vLLM's ``mode="before"`` validators read the raw body and assume its shape (they
    iterate ``messages``, call ``.get`` on its items); a body of another shape raises a
    TypeError or AttributeError there, which pydantic does not turn into a validation error
    (FastAPI would answer 500). Here it is one: a 400 naming the error. And a boolean where a
    number goes (``"top_k": true``) is refused, as OpenAI's API refuses it: pydantic's lax mode
    would read it as 1 or 0 and serve a request the client did not mean."""
    if isinstance(data, dict):
        for name in _number_fields(model):
            if isinstance(data.get(name), bool):
                raise ValueError(f"field {name}: expected a number, got a boolean "
                                 f"({json.dumps(data[name])})")
    try:
        return handler(data)
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ValueError(f"malformed request body ({type(exc).__name__}: {exc})") from None


class CompletionBody(CompletionRequest):
    """``/v1/completions``' body: vLLM's ``CompletionRequest``, a malformed one a 400."""

    @model_validator(mode="wrap")
    @classmethod
    def _shape(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _shape_errors_are_invalid(cls, data, handler)


class ChatCompletionBody(ChatCompletionRequest):
    """``/v1/chat/completions``' body: vLLM's ``ChatCompletionRequest``, a malformed one a 400."""

    @model_validator(mode="wrap")
    @classmethod
    def _shape(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _shape_errors_are_invalid(cls, data, handler)


MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
NO_CHAT_TEMPLATE = (  # vLLM's words, so clients that match on them keep working
    "As of transformers v4.44, default chat template is no longer allowed, so you must "
    "provide a chat template if the tokenizer does not define one."
)
TEXT_PART_TYPES = ("text", "input_text", "output_text")
ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}
GENERATION_CONFIG_FIELDS = (  # what vLLM's ModelConfig.get_diff_sampling_param reads
    "repetition_penalty", "presence_penalty", "frequency_penalty", "temperature", "top_k",
    "top_p", "min_p", "max_new_tokens",
)


class HTTPError(Exception):
    """A refusal with its HTTP status, the request field it is about, and extra headers."""

    def __init__(self, status: int, message: str, param: str | None = None, **headers: str):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.param, self.status)


def error_body(message: str, param: str | None = None, status: int = 400) -> dict[str, Any]:
    """vLLM's ``ErrorResponse``: ``code`` is the HTTP status, ``type`` its error class."""
    kind = ERROR_TYPES.get(status) or HTTPStatus(status).phrase.replace(" ", "")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def sse(data: Any) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def stream_error(message: str, status: int = 500) -> str:
    return sse(error_body(message, None, status))


STREAM_DONE = sse("[DONE]")


# ---- defaults ---------------------------------------------------------------------------
def generation_defaults(model_path: str, engine_args: Mapping[str, Any] | None = None
                        ) -> dict[str, Any]:
    """The server-side sampling defaults vLLM applies (``get_diff_sampling_param``).

    ``generation_config`` (an engine argument) is ``"auto"`` (the model's
    ``generation_config.json``), ``"vllm"`` (none) or a folder holding one;
    ``override_generation_config`` is laid over it. ``max_new_tokens`` becomes ``max_tokens``.
    """
    from transformers import GenerationConfig

    args = engine_args or {}
    src = args.get("generation_config", "auto")
    config: dict[str, Any] = {}
    if src != "vllm":
        folder = model_path if src == "auto" else str(src)
        local = Path(folder).is_dir()
        if not local or Path(folder, "generation_config.json").is_file():
            try:  # a hub id reads the hub (or its cache), as the tokenizer does
                config = GenerationConfig.from_pretrained(folder).to_diff_dict()
            except OSError:  # the model has none
                config = {}
    config.update(args.get("override_generation_config") or {})
    out = {k: config[k] for k in GENERATION_CONFIG_FIELDS if config.get(k) is not None}
    if "max_new_tokens" in out:
        out["max_tokens"] = out.pop("max_new_tokens")
    return out


def max_tokens_for(req: AnyRequest, prompt_len: int, max_model_len: int,
                   defaults: Mapping[str, Any]) -> int:
    """vLLM's rule: what the request asks for, else the model's default, never past the
    context; a request that cannot fit is refused, naming the field."""
    param = "max_tokens"
    requested = req.max_tokens
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        param, requested = "max_completion_tokens", req.max_completion_tokens
    if prompt_len >= max_model_len:
        raise HTTPError(400, f"This model's maximum context length is {max_model_len} tokens "
                        f"(max_model_len). However, your prompt contains {prompt_len} input "
                        "tokens, which leaves no room for output. Please reduce the length of "
                        "the input prompt.",
                        "messages" if isinstance(req, ChatCompletionRequest) else "prompt")
    if requested is not None and requested > 0 and prompt_len + requested > max_model_len:
        raise HTTPError(400, f"This model's maximum context length is {max_model_len} tokens "
                        f"(max_model_len). However, you requested {requested} output tokens "
                        f"({param}) and your prompt contains {prompt_len} input tokens, for a "
                        f"total of {prompt_len + requested} tokens. Please reduce the length "
                        f"of the input prompt or the number of requested output tokens.", param)
    room = max_model_len - prompt_len
    fallback = requested if requested is not None else defaults.get("max_tokens")
    return room if fallback is None else min(room, fallback)


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What vLLM's ``SamplingParams`` validators read from the model config."""

    max_model_len: int
    vocab_size: int
    max_logprobs: int = MAX_LOGPROBS

    def get_vocab_size(self) -> int:
        return self.vocab_size


def sampling_params(req: AnyRequest, max_tokens: int, defaults: Mapping[str, Any],
                    limits: ModelLimits, prompt_len: int) -> Any:
    """The request's ``SamplingParams`` (vLLM's own conversion) checked as vLLM's engine checks
    them on arrival (logprob counts, logit-bias and allowed token ids, the routed-experts start
    against the prompt's ``prompt_len`` tokens, a thinking budget without a reasoning parser),
    so a bad value is a 400 here rather than an engine error after admission (the engine's own
    refusals of a request's parameters are 400s too, ``engine_host._client_error``)."""
    try:
        params = req.to_sampling_params(max_tokens, dict(defaults))
        model: Any = limits  # the validators read only what ModelLimits has
        params._validate_logprobs(model)
        params._validate_logit_bias(model)
        params._validate_allowed_token_ids(model)
        params._validate_stop_token_ids(model)
    except (VLLMClientError, ValueError, TypeError, OverflowError) as exc:
        raise HTTPError(400, clean_message(exc), getattr(exc, "parameter", None)) from None
    start = getattr(params, "routed_experts_prompt_start", 0)
    if not 0 <= start <= prompt_len:  # vLLM's words
        raise HTTPError(400, "routed_experts_prompt_start must be between 0 and the prompt "
                        f"length ({prompt_len}), inclusive.", "routed_experts_prompt_start")
    if getattr(params, "thinking_token_budget", None) is not None:  # no reasoning parser here
        raise HTTPError(400, "thinking_token_budget is set but reasoning_config is not "
                        "configured: this server runs no reasoning parser.",
                        "thinking_token_budget")
    return params


def clean_message(exc: Exception) -> str:
    """A vLLM validation error's message without its ``(parameter=...)`` suffix."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)


def check_supported(req: AnyRequest, *, trust_request_chat_template: bool = False) -> None:
    """Refuse what vLLM's server can do but this one cannot, as vLLM words it."""
    if req.use_beam_search:
        raise HTTPError(400, "beam search (use_beam_search) is not supported by this server",
                        "use_beam_search")
    if isinstance(req, CompletionRequest):
        if req.suffix is not None:
            raise HTTPError(400, "suffix is not currently supported", "suffix")
        if req.prompt_embeds is not None:
            raise HTTPError(400, "prompt_embeds is not supported by this server", "prompt_embeds")
        return
    if not req.messages:
        raise HTTPError(400, "messages must hold at least one message", "messages")
    if req.tools and req.tool_choice != "none":
        raise HTTPError(400, f"tool_choice {req.tool_choice!r} requires a tool-call parser, "
                        "which this server does not run; send tool_choice='none'", "tool_choice")
    if req.chat_template is not None and not trust_request_chat_template:
        raise HTTPError(400, "Chat template is passed with request, but "
                        "--trust-request-chat-template is not set. Refused request with "
                        "untrusted chat template.", "chat_template")


# ---- prompts ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt of a request: its token ids and, for echo, its text."""

    token_ids: list[int]
    text: str


def completion_prompts(req: CompletionRequest, tokenizer: Any) -> list[Prompt]:
    """The prompts of a completion: a string, token ids, or a list of either (batched)."""
    raw = req.prompt
    items: list[Any] = [raw] if isinstance(raw, str) or _is_ids(raw) else list(raw or [])
    if not items:
        raise HTTPError(400, "prompt must not be empty", "prompt")
    vocab = len(tokenizer)
    out = []
    for i, item in enumerate(items):
        where = "prompt" if len(items) == 1 else f"prompt[{i}]"
        if isinstance(item, str):
            if not item:
                raise HTTPError(400, f"{where} must not be empty", "prompt")
            ids = list(tokenizer.encode(item, add_special_tokens=req.add_special_tokens))
            out.append(Prompt(ids, item))
            continue
        ids = list(item)
        if not ids:
            raise HTTPError(400, f"{where} must not be empty", "prompt")
        bad = [t for t in ids if t < 0 or t >= vocab]
        if bad:
            raise HTTPError(400, f"{where}: token id {bad[0]} outside the vocabulary "
                            f"[0, {vocab})", "prompt")
        out.append(Prompt(ids, tokenizer.decode(ids) if req.echo else ""))
    return out


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)


def validation_message(errors: Any) -> tuple[str, str | None]:
    """A 400's message and ``param`` from pydantic's errors, naming the field (the first error;
    a vLLM validator's own message and parameter when one refused the body)."""
    from vllm.entrypoints.serve.exception_handling.handlers.validation import (
        clean_loc_for_param,
    )
    from vllm.exceptions import VLLMValidationError

    err: dict[str, Any] = dict(errors[0]) if errors else {"loc": ("body",), "msg": "invalid body"}
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, VLLMValidationError):
        return clean_message(cause), cause.parameter
    loc = clean_loc_for_param(tuple(p for p in err["loc"] if p != "body")) or "body"
    if err.get("type") == "json_invalid":
        reason = (err.get("ctx") or {}).get("error", "JSON decode error")
        return f"body is not valid JSON: {reason} at character {loc}", "body"
    shown = repr(err.get("input"))
    if len(shown) > 200:
        shown = shown[:200] + "...[truncated]"
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return f"field {loc}: {err['msg']} (got {shown}){more}", loc


def chat_conversation(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The messages as the chat template sees them: content-part arrays joined into text
    (vLLM's "string" content format), ``None`` fields dropped. Content-part and tool-call
    arrays are validated as they are read (pydantic checks iterables lazily): a bad one is a
    400."""
    out = []
    for i, msg in enumerate(req.messages):
        try:
            out.append(_template_message(i, msg))
        except ValidationError as exc:
            message, _ = validation_message(exc.errors())
            raise HTTPError(400, f"messages[{i}]: {message}", "messages") from None
    return out


def _template_message(i: int, msg: Any) -> dict[str, Any]:
    """One message of ``chat_conversation``."""
    m = {k: (list(v) if k == "tool_calls" and v is not None else v)
         for k, v in dict(msg).items() if v is not None}
    if not isinstance(m.get("role"), str):  # vLLM's schema admits role-less message shapes
        raise HTTPError(400, f"messages[{i}]: a message needs a 'role' (a string: system, "
                        "developer, user, assistant or tool)", "messages")
    content = m.get("content")
    if content is not None and not isinstance(content, str):
        texts = []
        for part in list(content):
            if isinstance(part, str):  # a bare string part is text, as vLLM reads it
                texts.append(part)
                continue
            if not isinstance(part, Mapping):
                raise HTTPError(400, f"messages[{i}].content: a content part must be an object "
                                f"or a string (got {type(part).__name__})", "messages")
            part = dict(part)
            kind = part.get("type", "text" if "text" in part else None)
            if kind in TEXT_PART_TYPES:
                texts.append(str(part.get("text", "")))
            elif kind == "refusal":
                texts.append(str(part.get("refusal", "")))
            else:
                raise HTTPError(400, f"messages[{i}].content: content part type {kind!r} is "
                                "not supported (this model takes text only)", "messages")
        m["content"] = "\n".join(texts)
    return m


def chat_prompt(req: ChatCompletionRequest, tokenizer: Any) -> Prompt:
    """Render the conversation with the chat template (the request's, else the tokenizer's);
    a tokenizer without one is a 400, as in vLLM."""
    template = req.chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise HTTPError(400, NO_CHAT_TEMPLATE, "messages")
    conversation = chat_conversation(req)
    if not ("'developer'" in template or '"developer"' in template):  # vLLM's rule
        conversation = [{**m, "role": "system"} if m["role"] == "developer" else m
                        for m in conversation]
    kwargs = {**(req.chat_template_kwargs or {}),
              "add_generation_prompt": req.add_generation_prompt,
              "continue_final_message": req.continue_final_message}
    if req.documents is not None:
        kwargs["documents"] = req.documents
    try:
        text = tokenizer.apply_chat_template(conversation, chat_template=template,
                                             tokenize=False, **kwargs)
    except Exception as exc:  # jinja errors: the request's fault, as vLLM treats them
        # (and transformers' ValueError for options that contradict each other, such as
        # continue_final_message with add_generation_prompt)
        if not (isinstance(exc, ValueError)
                or any(c.__name__ == "TemplateError" for c in type(exc).__mro__)):
            raise
        raise HTTPError(400, f"chat template error: {exc}", "messages") from None
    ids = list(tokenizer.encode(text, add_special_tokens=req.add_special_tokens))
    return Prompt(ids, text)
