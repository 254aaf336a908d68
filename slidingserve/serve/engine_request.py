"""One request in vLLM's ``AsyncLLM``, taken and read in two steps as ``AsyncLLM.generate`` does.

``AsyncLLM.generate`` hands the request to the engine (``add_request``, where vLLM's input
processor checks its parameters) only once its caller reads the first output. A replica must
know that the engine took the request before it reports the admission, so that a refusal of
the parameters reaches the client as a plain 400, before a stream's 200: ``EngineRequest.add``
is the taking, ``outputs`` the reading, ``end`` the clean-up, each as ``generate`` does them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)
_orphans: set[asyncio.Future[Any]] = set()  # takings and aborts no caller awaits any more


class EngineRequest:
    """A request the engine has taken: its output collector, read until it finishes."""

    def __init__(self, llm: Any, queue: Any):
        self.llm, self.queue = llm, queue
        self.finished = False

    @classmethod
    async def add(cls, llm: Any, request_id: str, prompt: Any, params: Any) -> EngineRequest:
        """Hand the request to the engine. Raises what ``AsyncLLM.add_request`` raises: a
        ``VLLMClientError`` when vLLM's input processor refuses the parameters (the engine
        holds nothing of it then). Cancelled meanwhile (the client went away), the taking
        goes on and the engine aborts the request once it has it, so none is left running."""
        taking = asyncio.ensure_future(llm.add_request(request_id, prompt, params))
        try:
            queue = await asyncio.shield(taking)
        except asyncio.CancelledError:
            _orphans.add(taking)
            taking.add_done_callback(lambda t: _abort_orphan(llm, t))
            raise
        return cls(llm, queue)

    async def outputs(self) -> AsyncIterator[Any]:
        """The request's ``RequestOutput``s until the finished one (``generate``'s loop)."""
        from vllm.outputs import STREAM_FINISHED

        while not self.finished:
            out = self.queue.get_nowait() or await self.queue.get()  # no task switch if ready
            self.finished = out.finished
            if out is not STREAM_FINISHED:
                yield out

    async def end(self, exc: BaseException | None) -> None:
        """Release the request, ended by ``exc`` (None: it finished). As ``generate``'s
        handlers do, the engine aborts it unless it finished, the engine is dead, or vLLM
        itself refused it (``VLLMClientError``, ``GracefulHTTPError``): on cancellation (the
        client went away), a closed stream, or any other error."""
        from vllm.exceptions import GracefulHTTPError, VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            kept = (EngineDeadError, VLLMClientError, GracefulHTTPError)
            if not self.finished and not isinstance(exc, kept):
                await self.llm.abort(self.queue.request_id, internal=True)
        except Exception as err:  # the engine went down meanwhile: nothing left to abort
            log.warning("request %s: abort failed: %s: %s", self.queue.request_id,
                        type(err).__name__, err)
        finally:
            self.queue.close()


def _abort_orphan(llm: Any, taking: asyncio.Future[Any]) -> None:
    """Abort a request the engine took after its caller was cancelled."""
    _orphans.discard(taking)
    if taking.cancelled() or taking.exception() is not None:
        return  # not taken: nothing to abort
    ending = asyncio.ensure_future(EngineRequest(llm, taking.result()).end(None))
    _orphans.add(ending)
    ending.add_done_callback(_orphans.discard)
