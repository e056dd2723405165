"""The site's ground-truth endpoint, ``POST /v2/models/{name}/feedback``, and the hook that
remembers each answered prediction by its request id for it (a documented modelfleet
extension of the Open Inference Protocol, ``docs/feedback.md``).

Kept apart from :mod:`modelfleet.site.server` because it is not the hot path: the server
recognises the path (:func:`feedback_model`), checks the caller's access as for any model
route, then hands the request to :class:`FeedbackRoutes`, which reads at most
:data:`MAX_FEEDBACK_BYTES` and joins the labels in a worker thread
(:func:`~modelfleet.site.feedback.answer_feedback`), never on the event loop.

Errors follow the protocol (``{"error": "..."}``): 405 for another method, 404 when the site
keeps no predictions (feedback disabled) or the model is not loaded, 413 for a body past the
limit; what ``answer_feedback`` says of the labels themselves (400 with the reason, or the
counts joined and dropped).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy.typing as npt
import orjson

from modelfleet.errors import NotFound
from modelfleet.oip.paths import MODELS_PREFIX
from modelfleet.site.feedback import FeedbackStore, answer_feedback
from modelfleet.site.oip_routes import OipRoutes
from modelfleet.transport.asgi import Receive, Scope, Send, read_body, respond

__all__ = ["MAX_FEEDBACK_BYTES", "FeedbackRoutes", "feedback_model"]

log = logging.getLogger("modelfleet.site.server")  # the server's log, as before the split

_SUFFIX = "/feedback"
#: A feedback body of MAX_LABELS labels with long ids and text classes fits well within it.
MAX_FEEDBACK_BYTES = 4 * 1024 * 1024


def feedback_model(path: str) -> str | None:
    """The model a ``/v2/models/{name}/feedback`` path names; None for any other path."""
    if not (path.startswith(MODELS_PREFIX) and path.endswith(_SUFFIX)):
        return None
    name = path[len(MODELS_PREFIX) : -len(_SUFFIX)]
    return name if name and "/" not in name else None


class FeedbackRoutes:
    """Answers the feedback endpoint and remembers predictions, for one server.

    ``store`` None (feedback not enabled at the site): the endpoint answers 404 and
    :meth:`remember` does nothing. ``executor`` is the server's worker pool.
    """

    def __init__(
        self, store: FeedbackStore | None, routes: OipRoutes, executor: ThreadPoolExecutor
    ) -> None:
        self.store = store
        self._routes = routes
        self._executor = executor

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, method: str, name: str
    ) -> None:
        """``POST /v2/models/{name}/feedback``: labels joined with this site's predictions."""
        if method != "POST":
            await _error(send, 405, f"method {method} not allowed here; use POST")
            return
        store = self.store
        if store is None:
            await _error(send, 404, "feedback is not enabled at this site")
            return
        try:
            model = self._routes.lookup(name, None)
        except NotFound as exc:
            await _error(send, 404, exc.message)
            return
        body = await read_body(scope, receive, MAX_FEEDBACK_BYTES)
        if body is None:
            await _error(
                send, 413, f"feedback body exceeds {MAX_FEEDBACK_BYTES} bytes; split the batch"
            )
            return
        status, doc = await asyncio.get_running_loop().run_in_executor(
            self._executor, answer_feedback, store, name, body, model.version
        )
        await respond(send, status, orjson.dumps(doc))

    def remember(
        self, model: str, version: int, request_id: str, results: dict[str, npt.NDArray[Any]]
    ) -> None:
        """Keep an answered prediction for the labels that may name ``request_id`` later;
        never raises (feedback must never break serving: a failure is logged)."""
        if self.store is None:
            return
        try:
            self.store.remember(model, version, request_id, results)
        except Exception:
            log.exception("prediction of %s not remembered", model)


async def _error(send: Send, status: int, message: str) -> None:
    await respond(send, status, orjson.dumps({"error": message}))
