"""No secret in any log line: each secret's failure path is driven for real, and every line the
process wrote (its output and its log files) is searched for the secret.

- the bot token: `reconguard telegram` whose Bot API answers getUpdates with endless redirects
  (a proxy or captive portal in the way): aiohttp's error quotes the request URL, which holds the
  token, and aiogram's polling logger prints it;
- bearer tokens: a client that puts its token in the query string, logged by httpx, and in the
  Authorization header of a request the API fails;
- database passwords: `reconguard migrate` against a database that cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from infra import logredact
from infra.embedded import free_port, wait_until
from tests.integration.interfaces.support import people_with_data, served_api
from tests.support.fake_telegram import BOT

pytestmark = pytest.mark.integration

BOT_TOKEN = "987654321:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"
DB_PASSWORD = "pw-" + "Q7x" * 8


def _everything_written(data_dir: Path, output: str) -> str:
    logs = [p.read_text(errors="replace") for p in data_dir.rglob("*.log")] if data_dir.exists() else []
    return "\n".join([output, *logs])


def _command(data_dir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("RECONGUARD_", "TELEGRAM_"))}
    variables |= {"RECONGUARD_DATA_DIR": str(data_dir), "COLUMNS": "400", **env}
    return subprocess.Popen([sys.executable, "-m", "reconguard", *args], env=variables, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def redirecting_bot_api() -> Iterator[str]:
    """A Bot API that knows the bot (getMe) and redirects every other call to itself, forever."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port = free_port()

    async def handle(request: web.Request) -> web.Response:
        if request.match_info["method"].lower() == "getme":
            return web.json_response({"ok": True, "result": BOT})
        raise web.HTTPFound(str(request.url))

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="redirecting-bot-api", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_the_bot_token_is_redacted_from_aiogram_polling_errors(tmp_path, settings, redirecting_bot_api):
    data_dir = tmp_path / "data"
    service = _command(
        data_dir, "telegram", KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        DATABASE_URL=settings.database_url, RECONGUARD_TOPIC_PREFIX=settings.topic_prefix,
        TELEGRAM_BOT_TOKEN=BOT_TOKEN, RECONGUARD_TELEGRAM_API_BASE=redirecting_bot_api,
        RECONGUARD_TELEGRAM_POLLING_TIMEOUT_SECONDS="1", RECONGUARD_TELEGRAM_BACKOFF_INITIAL_SECONDS="0.2")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(service.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_until(lambda: "TooManyRedirects" in "".join(lines), timeout=90, what="aiogram's polling error")
    finally:
        service.send_signal(signal.SIGINT)
        service.wait(60)
        reader.join(10)
    written = _everything_written(data_dir, "".join(lines))
    assert "/bot***/getUpdates" in written  # the line that held the token was written, redacted
    assert BOT_TOKEN not in written and BOT_TOKEN.split(":")[1] not in written


def test_a_database_password_is_redacted_when_the_database_cannot_be_reached(tmp_path):
    data_dir = tmp_path / "data"
    url = f"postgresql://reconguard:{DB_PASSWORD}@127.0.0.1:{free_port()}/reconguard"
    done = _command(data_dir, "migrate", DATABASE_URL=url, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    output, _ = done.communicate(timeout=120)
    assert done.returncode != 0 and "Connect call failed" in output  # the failure path was taken
    assert DB_PASSWORD not in _everything_written(data_dir, output)


def test_a_database_password_in_any_library_line_is_redacted(caplog):
    """A driver or library quoting its DSN (as a URL or as keywords) is redacted too."""
    logredact.install([])
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("asyncpg").warning("connect to postgresql://u:%s@db:5432/x failed", DB_PASSWORD)
        logging.getLogger("sqlalchemy.pool").error("dsn host=db user=u password=%s dbname=x", DB_PASSWORD)
        try:
            raise ConnectionError(f"postgresql+asyncpg://u:{DB_PASSWORD}@db/x refused")
        except ConnectionError:
            logging.getLogger("alembic").exception("migration failed")
    assert caplog.records and DB_PASSWORD not in caplog.text
    assert "u:***@db" in caplog.text and "password=***" in caplog.text


def test_bearer_tokens_are_redacted_from_client_and_server_logs(settings, database_url, caplog):
    people = people_with_data(database_url, tag="redact", snapshots=1, at=settings_now())
    token = people.tokens["owner"]
    logredact.install([])  # as every command does at start (reconguard.startup)
    with caplog.at_level(logging.DEBUG), served_api(settings) as base_url, \
            httpx.Client(base_url=base_url, timeout=10) as client:
        client.get("/me", params={"access_token": token})  # a careless client: token in the URL
        client.get("/users/nobody/logs", params={"cursor": "x"}, headers={"Authorization": f"Bearer {token}"})
        logging.getLogger("uvicorn.error").warning("client sent Authorization: Bearer %s", token)
    assert "/me?access_token=***" in caplog.text  # httpx logged the URL, redacted
    assert token not in caplog.text and token[3:] not in caplog.text


def settings_now():
    from schemas import utcnow

    return utcnow()
