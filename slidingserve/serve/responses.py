"""OpenAI responses and stream chunks in vLLM's shapes, from the engine's ``TokenDelta``s.

One ``Responder`` per HTTP request. A request with ``P`` prompts and ``n`` choices per prompt
has ``P * n`` choices; choice ``p * n + j`` is the ``j``-th sample of prompt ``p`` (vLLM's
numbering). The objects are vLLM's own response models (``CompletionResponse``,
``ChatCompletionStreamResponse``, their logprob models), serialised as vLLM's server does.
Logprobs arrive from the engine as plain ``{token_id: (logprob, decoded)}`` per position,
sampled token first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionLogProb,
    ChatCompletionLogProbs,
    ChatCompletionLogProbsContent,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
)
from vllm.entrypoints.openai.completion.protocol import (
    CompletionLogProbs,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
)
from vllm.entrypoints.serve.engine.protocol import UsageInfo

from slidingserve.serve.messages import StepLogprobs, TokenDelta
from slidingserve.serve.openai_api import AnyRequest, Prompt, sse

MIN_LOGPROB = -9999.0  # what OpenAI (and vLLM) send for -inf
STREAM_OPEN = ": admitted\n\n"  # an SSE comment: headers go out before the first token


@dataclass(slots=True)
class Choice:
    """What one choice has produced so far."""

    prompt: Prompt
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[StepLogprobs | None] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_generated: int = 0
    text_len: int = 0  # characters streamed so far (completion logprobs' text_offset)
    started: bool = False


class Responder:
    """Builds the JSON response, or the SSE chunks, of one request."""

    def __init__(self, req: AnyRequest, rid: str, model: str, prompts: list[Prompt],
                 tokenizer: Any):
        self.req, self.rid, self.model, self.tokenizer = req, rid, model, tokenizer
        self.chat = isinstance(req, ChatCompletionRequest)
        self.n = req.n or 1
        self.created = int(time.time())
        self.prompts = prompts
        self.choices = [Choice(p) for p in prompts for _ in range(self.n)]
        self.prompt_logprobs: dict[int, list[StepLogprobs | None]] = {}  # per prompt, for echo
        if isinstance(req, ChatCompletionRequest):
            self.top = req.top_logprobs if req.logprobs else None
            last = req.messages[-1] if req.messages else {}
            self.chat_echo = (str(last.get("content") or "") if req.echo and isinstance(
                last.get("content"), str) and last.get("role") == "assistant" else "")
        else:
            self.top = req.logprobs
            self.chat_echo = ""
        # echo with max_tokens 0: vLLM generates one token and answers with the prompt alone
        self.echo_only = not self.chat and bool(req.echo) and req.max_tokens == 0
        opts = req.stream_options
        self.include_usage = bool(opts and opts.include_usage)
        self.continuous_usage = bool(self.include_usage and opts and opts.continuous_usage_stats)

    # ---- bookkeeping --------------------------------------------------------------------
    def add(self, prompt_index: int, ev: TokenDelta) -> tuple[int, Choice, bool, TokenDelta]:
        """Record ``ev``; returns (choice index, its state, whether this is its first delta,
        the delta as answered)."""
        index = prompt_index * self.n + ev.index
        c = self.choices[index]
        first = not c.started
        c.started = True
        if self.echo_only:
            ev = TokenDelta("", [], ev.finish_reason, ev.num_prompt_tokens, 0, ev.index,
                            None if ev.logprobs is None else [], stop_reason=ev.stop_reason)
        c.text.append(ev.text)
        c.token_ids.extend(ev.token_ids)
        if ev.logprobs is not None:
            c.logprobs.extend(ev.logprobs)
        c.finish_reason = ev.finish_reason or c.finish_reason
        c.stop_reason = ev.stop_reason if ev.finish_reason else c.stop_reason
        c.num_generated = max(c.num_generated, ev.num_generated)
        return index, c, first, ev

    def usage(self) -> UsageInfo:
        prompt = sum(len(p.token_ids) for p in self.prompts)
        done = sum(c.num_generated for c in self.choices)
        return UsageInfo(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)

    # ---- non-streaming ------------------------------------------------------------------
    def response(self, prompt_logprobs: dict[int, list[StepLogprobs | None]]) -> dict[str, Any]:
        usage = self.usage()
        if self.chat:
            choices = [ChatCompletionResponseChoice(
                index=i, message=ChatMessage(role="assistant",
                                             content=self.chat_echo + "".join(c.text)),
                logprobs=self._chat_logprobs(c.token_ids, c.logprobs),
                finish_reason=c.finish_reason, stop_reason=c.stop_reason)
                for i, c in enumerate(self.choices)]
            return ChatCompletionResponse(id=self.rid, created=self.created, model=self.model,
                                          choices=choices, usage=usage).model_dump()
        out = []
        for i, c in enumerate(self.choices):
            text, ids, steps = "".join(c.text), c.token_ids, c.logprobs
            if self.req.echo:
                text = c.prompt.text + text
                ids = c.prompt.token_ids + ids
                steps = list(prompt_logprobs.get(i // self.n) or
                             [None] * len(c.prompt.token_ids)) + steps
            out.append(CompletionResponseChoice(
                index=i, text=text, finish_reason=c.finish_reason, stop_reason=c.stop_reason,
                logprobs=self._completion_logprobs(ids, steps, 0)))
        return CompletionResponse(id=self.rid, created=self.created, model=self.model,
                                  choices=out, usage=usage).model_dump()

    # ---- streaming ----------------------------------------------------------------------
    def opening(self) -> list[str]:
        """What a stream sends at once, before any token: chat's role chunk per choice (and the
        echoed assistant prefix), or an SSE comment for completions."""
        if not self.chat:
            return [STREAM_OPEN]
        out = []
        for i in range(len(self.choices)):
            out.append(self._chat_chunk(i, DeltaMessage(role="assistant", content="")))
            if self.chat_echo:
                out.append(self._chat_chunk(i, DeltaMessage(content=self.chat_echo)))
        return out

    def chunk(self, prompt_index: int, ev: TokenDelta,
              prompt_logprobs: list[StepLogprobs | None] | None) -> str | None:
        """The SSE chunk for one delta (None for an empty one)."""
        if prompt_logprobs is not None:  # sent once per prompt; every choice echoes them
            self.prompt_logprobs[prompt_index] = prompt_logprobs
        before = len(self.choices[prompt_index * self.n + ev.index].token_ids)
        index, c, first, ev = self.add(prompt_index, ev)
        new_steps = c.logprobs[before:] if ev.logprobs is not None else []
        if not (ev.text or ev.token_ids or ev.finish_reason or (first and self.req.echo)):
            return None
        if self.chat:
            lp = self._chat_logprobs(ev.token_ids, new_steps)
            return self._chat_chunk(index, DeltaMessage(content=ev.text), lp, ev)
        text, ids, steps = ev.text, list(ev.token_ids), list(new_steps)
        if first and self.req.echo:
            text = c.prompt.text + text
            ids = c.prompt.token_ids + ids
            echoed = self.prompt_logprobs.get(prompt_index)
            steps = list(echoed or [None] * len(c.prompt.token_ids)) + steps
        logprobs = self._completion_logprobs(ids, steps, c.text_len)
        c.text_len += len(text)
        choice = CompletionResponseStreamChoice(index=index, text=text, logprobs=logprobs,
                                                finish_reason=ev.finish_reason,
                                                stop_reason=ev.stop_reason)
        return self._sse(CompletionStreamResponse, [choice])

    def usage_chunk(self) -> str:
        """The last chunk of a stream with ``include_usage``: no choices, the totals."""
        cls = ChatCompletionStreamResponse if self.chat else CompletionStreamResponse
        return self._sse(cls, [], usage=True)

    def _sse(self, cls: Any, choices: list[Any], usage: bool = False) -> str:
        """A chunk with every field a chunk carries (id, object, created, model) set, so that
        ``exclude_unset`` (vLLM's chunk serialisation) keeps them."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        extra = {"usage": self.usage()} if usage or self.continuous_usage else {}
        chunk = cls(id=self.rid, object=obj, created=self.created, model=self.model,
                    choices=choices, **extra)
        return sse(chunk.model_dump_json(exclude_unset=True))

    def _chat_chunk(self, index: int, delta: DeltaMessage,
                    logprobs: ChatCompletionLogProbs | None = None,
                    ev: TokenDelta | None = None) -> str:
        choice = ChatCompletionResponseStreamChoice(
            index=index, delta=delta, logprobs=logprobs,
            finish_reason=ev.finish_reason if ev else None,
            stop_reason=ev.stop_reason if ev else None)
        return self._sse(ChatCompletionStreamResponse, [choice])

    # ---- logprobs -----------------------------------------------------------------------
    def _token(self, step: StepLogprobs | None, token_id: int) -> str:
        if step is not None and token_id in step and step[token_id][1] is not None:
            return str(step[token_id][1])
        return str(self.tokenizer.decode([token_id]))

    def _completion_logprobs(self, token_ids: list[int], steps: list[StepLogprobs | None],
                             offset: int) -> CompletionLogProbs | None:
        """vLLM's ``_create_completion_logprobs``: the sampled token and the top ``logprobs``
        alternatives (plus the sampled one) per position."""
        if self.top is None:
            return None
        offsets: list[int] = []
        tokens: list[str] = []
        logprobs: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        for i, tid in enumerate(token_ids):
            step = steps[i] if i < len(steps) else None
            token = self._token(step, tid)
            offsets.append(offset)
            offset += len(token)
            tokens.append(token)
            if step is None or tid not in step:
                logprobs.append(None)
                tops.append(None)
                continue
            logprobs.append(max(step[tid][0], MIN_LOGPROB))
            tops.append({
                self._token(step, t): max(lp, MIN_LOGPROB)
                for k, (t, (lp, _)) in enumerate(step.items()) if self.top == -1 or self.top >= k
            })
        # every field passed in: streamed chunks keep only the fields set (exclude_unset)
        return CompletionLogProbs(text_offset=offsets, token_logprobs=logprobs, tokens=tokens,
                                  top_logprobs=tops)

    def _chat_logprobs(self, token_ids: list[int], steps: list[StepLogprobs | None]
                       ) -> ChatCompletionLogProbs | None:
        """vLLM's ``_create_chat_logprobs``: per token, its logprob, bytes and the first
        ``top_logprobs`` alternatives."""
        if self.top is None:
            return None
        content = []
        for i, tid in enumerate(token_ids):
            step = steps[i] if i < len(steps) else None
            token = self._token(step, tid)
            if step is None or tid not in step:
                content.append(ChatCompletionLogProbsContent(
                    token=token, bytes=list(token.encode("utf-8", errors="replace"))))
                continue
            top = [ChatCompletionLogProb(token=(t := self._token(step, tok)),
                                         logprob=max(lp, MIN_LOGPROB),
                                         bytes=list(t.encode("utf-8", errors="replace")))
                   for k, (tok, (lp, _)) in enumerate(step.items())
                   if self.top == -1 or k < self.top]
            content.append(ChatCompletionLogProbsContent(
                token=token, logprob=max(step[tid][0], MIN_LOGPROB),
                bytes=list(token.encode("utf-8", errors="replace")), top_logprobs=top))
        return ChatCompletionLogProbs(content=content)
