"""A fake engine handle and tokenizer for ingress tests without a cluster: each
``generate.remote`` call plays the next scripted stream (an exception in a script is raised
where it stands, as Ray raises a replica's death on its stream)."""

from __future__ import annotations

from typing import Any

from slidingserve.serve.messages import GenerateRequest


class Tokenizer:
    chat_template = None

    def encode(self, text: str, **_: Any) -> list[int]:
        return [3 + len(w) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"<{i}>" for i in ids)

    def __len__(self) -> int:
        return 100


class Stream:
    def __init__(self, events: list[Any]):
        self.events, self.cancelled = list(events), False

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        if not self.events:
            raise StopAsyncIteration
        ev = self.events.pop(0)
        if isinstance(ev, Exception):
            raise ev
        return ev

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    """``engine.options(stream=True).generate.remote(req)``: the next scripted stream."""

    def __init__(self, *scripts: list[Any]):
        self.scripts, self.streams = list(scripts), []
        self.requests: list[GenerateRequest] = []
        self.generate = self

    def options(self, **_: Any) -> Engine:
        return self

    def remote(self, req: GenerateRequest) -> Stream:
        self.requests.append(req)
        self.streams.append(Stream(self.scripts.pop(0)))
        return self.streams[-1]
