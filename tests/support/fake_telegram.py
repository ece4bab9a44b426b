"""A local HTTP server that speaks enough of the Telegram Bot API for aiogram.

It answers getMe, deleteWebhook, getUpdates (long polling over updates the test pushes) and
sendMessage (recorded). A test can script the next answers of a method (429 with retry_after,
500, ...) and name the chats that exist: a message to any other chat is "chat not found".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT = {"id": 424242, "is_bot": True, "first_name": "reconguard", "username": "reconguard_test_bot"}


@dataclass(frozen=True)
class SentMessage:
    chat_id: int
    text: str
    message_id: int


@dataclass
class FakeTelegram:
    known_chats: set[int] = field(default_factory=set)
    sent: list[SentMessage] = field(default_factory=list)
    attempts: list[tuple[str, int]] = field(default_factory=list)  # (method, status answered)
    base_url: str = ""
    _scripted: dict[str, deque[tuple[int, dict[str, Any]] | None]] = field(default_factory=dict)
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _new_update: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # --- what a test programs ---

    def answer_next(self, method: str, *answers: str | tuple[str, int]) -> None:
        """Script the next answers of ``method``: "ok" (answer normally), "500", "502",
        ("429", retry_after), "chat_not_found"."""
        queue = self._scripted.setdefault(method.lower(), deque())
        for answer in answers:
            queue.append(None if answer == "ok" else _scripted_answer(answer))

    def push_message(self, *, chat_id: int, text: str) -> None:
        """A user writes ``text`` in ``chat_id`` (seen by the bot's next getUpdates)."""
        update_id = len(self._updates) + 1
        self._updates.append(
            {
                "update_id": update_id,
                "message": {
                    "message_id": next(self._ids),
                    "date": int(time.time()),
                    "text": text,
                    "chat": {"id": chat_id, "type": "private"},
                    "from": {"id": chat_id, "is_bot": False, "first_name": "T"},
                    "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
                    if text.startswith("/")
                    else [],
                },
            }
        )
        self._new_update.set()

    def texts_to(self, chat_id: int) -> list[str]:
        return [m.text for m in self.sent if m.chat_id == chat_id]

    # --- the Bot API ---

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].lower()
        params = dict(await request.post()) | dict(request.query)
        scripted = self._scripted.get(method)
        answer = scripted.popleft() if scripted else None
        if answer is not None:
            status, body = answer
            self.attempts.append((method, status))
            return web.json_response(body, status=status)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._answer(method, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
        status, body = await handler(params)
        return self._answer(method, status, body)

    def _answer(self, method: str, status: int, body: dict[str, Any]) -> web.Response:
        self.attempts.append((method, status))
        return web.json_response(body, status=status)

    async def _api_getme(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": BOT}

    async def _api_deletewebhook(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": True}

    async def _api_sendmessage(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = int(params["chat_id"])
        if chat_id not in self.known_chats:
            return _scripted_answer("chat_not_found")
        message = SentMessage(chat_id=chat_id, text=str(params["text"]), message_id=next(self._ids))
        self.sent.append(message)
        return 200, {
            "ok": True,
            "result": {
                "message_id": message.message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "text": message.text,
            },
        }

    async def _api_getupdates(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        offset = int(params.get("offset", 0) or 0)
        deadline = time.monotonic() + min(float(params.get("timeout", 0) or 0), 5.0)
        while True:
            pending = [u for u in self._updates if u["update_id"] >= offset]
            remaining = deadline - time.monotonic()
            if pending or remaining <= 0:
                return 200, {"ok": True, "result": pending}
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), remaining)


def _scripted_answer(answer: str | tuple[str, int]) -> tuple[int, dict[str, Any]]:
    if isinstance(answer, tuple):
        _, retry_after = answer
        return 429, {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        }
    if answer == "chat_not_found":
        return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
    status = int(answer)
    return status, {"ok": False, "error_code": status, "description": "Internal Server Error"}


@contextlib.asynccontextmanager
async def fake_telegram(*, known_chats: set[int] | None = None) -> AsyncIterator[FakeTelegram]:
    """Serve a FakeTelegram on a free loopback port; its ``base_url`` goes to TelegramAPIServer.from_base."""
    fake = FakeTelegram(known_chats=set(known_chats or ()))
    app = web.Application()
    app.router.add_route("*", "/bot{token}/{method}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp offers no public accessor
    fake.base_url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
