"""The open dataset documents of an editor session, checked off the event loop.

Knows nothing of the protocol: the server passes in how to publish diagnostics and the
summary (plain dicts) and how long to debounce, and calls ``open``/``change``/``close`` from
its event loop in message order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .editor import DatasetDocument, Range
    from .training_view import TemplateRenderer, ViewOptions

Publish = Callable[[dict[str, Any]], None]
RENDER_CHUNK = 100  # records rendered before a document's first publish (a small file: all)
FILL_SLICE_SECONDS = 0.02  # then rendering goes on in slices this long, between edits


class DatasetDocuments:
    """Open dataset documents, checked on one worker thread so the event loop never waits.

    Edits apply in order on that thread; diagnostics are published at once for an edit after
    a quiet spell, and at most once per ``debounce_seconds()`` during a burst of edits.
    ``open``, ``change``, ``close`` and the queries must be called on the event loop thread.
    """

    def __init__(
        self,
        publish_diagnostics: Publish,
        publish_summary: Publish,
        debounce_seconds: Callable[[], float],
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.publish_diagnostics = publish_diagnostics
        self.publish_summary = publish_summary
        self.debounce_seconds = debounce_seconds
        self.docs: dict[str, DatasetDocument] = {}  # touched on the worker thread only
        self.versions: dict[str, int | None] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.last_edit: dict[str, float] = {}
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="cortex-datasets")
        self.warn = warn
        self.training: tuple[TemplateRenderer | None, ViewOptions | None] = (None, None)
        self.filling: set[str] = set()  # documents whose model checks fill in chunk by chunk
        self.language_ids: dict[str, str] = {}
        # Tracked (their edits apply) but not checked: the dataset file patterns changed.
        self.muted: set[str] = set()

    def __contains__(self, uri: str) -> bool:
        return uri in self.versions

    def checked(self, uri: str) -> bool:
        """True for a tracked document whose diagnostics are published (hover, fixes)."""
        return uri in self.versions and uri not in self.muted

    def open_documents(self) -> dict[str, str]:
        """Return the tracked documents' URIs with their languageId."""
        return dict(self.language_ids)

    def open(self, uri: str, text: str, language_id: str, version: int | None) -> None:
        """Start tracking a document and publish its diagnostics at once."""
        self.versions[uri] = version
        self.language_ids[uri] = language_id
        self.worker.submit(self._open, uri, text, language_id)
        self._schedule(uri, immediate=True, opened=True)

    def change(
        self, uri: str, changes: list[tuple[Range | None, str]], version: int | None
    ) -> None:
        """Apply LSP content changes (a None range replaces the whole text) in order."""
        if uri not in self:
            return
        self.versions[uri] = version
        self.worker.submit(self._change, uri, changes)
        self._schedule(uri)

    def close(self, uri: str) -> None:
        """Stop tracking a document and clear its diagnostics."""
        if uri not in self:
            return
        self.versions.pop(uri, None)
        self.language_ids.pop(uri, None)
        self.muted.discard(uri)
        if (timer := self.timers.pop(uri, None)) is not None:
            timer.cancel()
        self.worker.submit(self._close, uri)

    def set_checked(self, uri: str, checked: bool) -> None:
        """Check a tracked document again, or stop: clear its diagnostics, keep its edits."""
        if uri not in self or checked == (uri not in self.muted):
            return
        if checked:
            self.muted.discard(uri)
            self._schedule(uri, immediate=True, opened=True)
            return
        self.muted.add(uri)
        if (timer := self.timers.pop(uri, None)) is not None:
            timer.cancel()
        self.worker.submit(self.publish_diagnostics, {"uri": uri, "diagnostics": []})

    def saved(self, uri: str) -> None:
        """Publish a saved document's diagnostics and summary now (a pending debounce ends)."""
        if self.checked(uri):
            self._schedule(uri, immediate=True)

    def set_training(self, model_path: str | None, options: ViewOptions) -> None:
        """Check every document against this model's template from now on (None: no model).

        The tokenizer loads on the worker thread; one that cannot load is a warning.
        """
        self.worker.submit(self._set_training, model_path, options)
        for uri in self.versions:
            if uri not in self.muted:
                self._schedule(uri, immediate=True, opened=True)

    def text(self, uri: str) -> Future[tuple[str, str] | None]:
        """Return a document's text and format, once the edits before it are applied."""
        return self.worker.submit(lambda: (doc := self.docs.get(uri)) and (doc.text, doc.format))

    def hover(self, uri: str, line: int, character: int) -> Future[str | None]:
        """Return the hover text at a position, once the edits before it are applied."""
        from .editor import hover

        return self.worker.submit(
            lambda: (doc := self.docs.get(uri)) and hover(doc, line, character)
        )

    def code_actions(
        self, uri: str, range: Range, only: list[str] | None = None
    ) -> Future[list[dict[str, Any]] | None]:
        """Return the code actions of kinds ``only`` (None: all) for a range, once the edits
        before it are applied."""
        from .editor import code_actions

        return self.worker.submit(
            lambda: (doc := self.docs.get(uri)) and code_actions(doc, range, only)
        )

    # -- on the event loop ----------------------------------------------------------------------

    def _schedule(self, uri: str, immediate: bool = False, opened: bool = False) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet = now - self.last_edit.get(uri, float("-inf"))
        self.last_edit[uri] = now
        delay = self.debounce_seconds()
        if (timer := self.timers.pop(uri, None)) is not None:
            timer.cancel()
        if immediate or quiet >= delay:
            self.worker.submit(self._publish, uri, RENDER_CHUNK if opened else 0)
        else:
            self.timers[uri] = loop.call_later(
                delay, lambda: self.worker.submit(self._publish, uri)
            )

    # -- on the worker thread -------------------------------------------------------------------

    def _publish(self, uri: str, render_limit: int = 0) -> None:
        """Publish what is checked now; model checks of a big file follow in chunks.

        The validation diagnostics do not wait for the model: edited records are rendered at
        once, up to ``render_limit`` others (``RENDER_CHUNK`` when the document opens: a small
        file is complete at once), and the rest in slices between edits, then published again.
        """
        from .editor import publish_payload

        doc = self.docs.get(uri)
        if doc is None or uri in self.muted:
            return
        params, summary = publish_payload(doc, self.versions.get(uri), render_limit=render_limit)
        self.publish_diagnostics(params)
        self.publish_summary(summary)
        if doc.trained is not None and not doc.trained.complete and uri not in self.filling:
            self.filling.add(uri)
            self.worker.submit(self._fill, uri)

    def _fill(self, uri: str) -> None:
        doc = self.docs.get(uri)
        if doc is None or doc.trained is None:
            self.filling.discard(uri)
            return
        deadline = time.monotonic() + FILL_SLICE_SECONDS
        done = doc.render_trained(0)
        while not done and time.monotonic() < deadline:
            done = doc.render_trained(4)
        if done:
            self.filling.discard(uri)
            self._publish(uri)
        else:
            self.worker.submit(self._fill, uri)

    def _open(self, uri: str, text: str, language_id: str) -> None:
        from .editor import DatasetDocument, opening_payload

        renderer, options = self.training
        early = opening_payload(
            uri, text, language_id, self.versions.get(uri), renderer is not None
        )
        if early is not None:
            self.publish_diagnostics(early)
        self.docs[uri] = DatasetDocument(
            uri, text, language_id=language_id, renderer=renderer, view_options=options
        )

    def _set_training(self, model_path: str | None, options: ViewOptions) -> None:
        from ..errors import CortexError
        from .training_view import load_renderer

        renderer = None
        if model_path is not None:
            try:
                renderer = load_renderer(model_path)
            except CortexError as error:
                self.warn(f"model: {error.message}; dataset checks go on without it")
        self.training = (renderer, options)
        for doc in self.docs.values():
            doc.set_training(renderer, options)

    def _change(self, uri: str, changes: list[tuple[Range | None, str]]) -> None:
        doc = self.docs.get(uri)
        if doc is None:
            return
        for change_range, text in changes:
            doc.apply_change(change_range, text)

    def _close(self, uri: str) -> None:
        self.docs.pop(uri, None)
        self.publish_diagnostics({"uri": uri, "diagnostics": []})
