"""The `telegram` service: the alerts relay and the /status answerer, sharing one bot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from wsgiref.simple_server import WSGIServer

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import async_sessionmaker

from infra.db import make_engine, make_sessionmaker, while_database_down
from infra.kafka import group_consumer, make_producer
from infra.metrics import serve_metrics
from infra.settings import Settings, TelegramSettings
from reconguard.telegram.relay import TOPICS, AlertRelay
from reconguard.telegram.sending import Backoff
from reconguard.telegram.status import answer_status

log = logging.getLogger(__name__)


def make_bot(telegram: TelegramSettings) -> Bot:
    """A bot talking to ``api_base`` (Telegram itself unless configured otherwise)."""
    if telegram.bot_token is None:
        raise ValueError("RECONGUARD_TELEGRAM_BOT_TOKEN is not set")
    session = AiohttpSession(
        api=TelegramAPIServer.from_base(telegram.api_base),
        timeout=telegram.request_timeout_seconds,
    )
    return Bot(
        telegram.bot_token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


def backoff_of(telegram: TelegramSettings) -> Backoff:
    return Backoff(
        initial=telegram.backoff_initial_seconds,
        maximum=telegram.backoff_max_seconds,
        retry_after_maximum=telegram.retry_after_max_seconds,
    )


async def serve(settings: Settings, *, stop: asyncio.Event) -> None:
    telegram = settings.telegram
    if telegram.bot_token is None:
        # `reconguard run` starts every service; without a bot there is nothing to send with.
        log.warning("telegram: RECONGUARD_TELEGRAM_BOT_TOKEN is not set; alerts will not go to Telegram")
        await stop.wait()
        return
    if settings.kafka_bootstrap_servers is None or settings.database_url is None:
        raise ValueError("the telegram service needs KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL")
    metrics_server = _serve_metrics(settings, telegram)
    try:
        # A broker it cannot reach (at start, during a cut) is waited for, as the database is (relay.py).
        await while_database_down(lambda: _serve_once(settings, telegram, stop=stop), stop=stop, what="telegram",
                                  also=(KafkaError,))
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()


async def _serve_once(settings: Settings, telegram: TelegramSettings, *, stop: asyncio.Event) -> None:
    assert settings.kafka_bootstrap_servers and settings.database_url
    engine = make_engine(settings.database_url, pool_size=3, max_overflow=2)
    bot = make_bot(telegram)
    producer = make_producer(settings.kafka_bootstrap_servers)
    consumer = group_consumer(settings, *TOPICS, name="telegram", group_id=telegram.consumer_group)
    try:
        await producer.start()
        await consumer.start()
        await _relay_and_answer(
            settings,
            telegram,
            bot=bot,
            sessions=make_sessionmaker(engine),
            producer=producer,
            consumer=consumer,
            stop=stop,
        )
    finally:
        for closing in (consumer.stop(), producer.stop(), bot.session.close(), engine.dispose()):
            with contextlib.suppress(Exception):
                await closing


def _serve_metrics(settings: Settings, telegram: TelegramSettings) -> WSGIServer | None:
    if telegram.metrics_port is None:
        return None
    token = settings.api.metrics_token
    return serve_metrics(host=settings.http_host, port=telegram.metrics_port,
                         token=token.get_secret_value() if token else None, per_account=settings.api.metrics_per_account)


async def _relay_and_answer(
    settings: Settings,
    telegram: TelegramSettings,
    *,
    bot: Bot,
    sessions: async_sessionmaker,
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    stop: asyncio.Event,
) -> None:
    backoff = backoff_of(telegram)
    relay = AlertRelay(
        bot=bot,
        sessions=sessions,
        producer=producer,
        prefix=settings.topic_prefix,
        backoff=backoff,
        stop=stop,
    )
    tasks = [asyncio.create_task(relay.run(consumer), name="telegram-relay")]
    if telegram.status_enabled:
        tasks.append(
            asyncio.create_task(
                answer_status(
                    bot,
                    sessions=sessions,
                    polling_timeout=telegram.polling_timeout_seconds,
                    backoff=backoff,
                    stop=stop,
                ),
                name="telegram-status",
            )
        )
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
