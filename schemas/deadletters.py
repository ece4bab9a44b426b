"""A message a consumer could not use, kept with the reason."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.envelope import Payload

#: Who dead-letters, as ``consumer`` names them: the poller's sync-command reader, the close
#: executor, the streams worker, the projector, the Telegram relay. (Replay never writes to the
#: live dead-letter topic: it counts what it could not use.)
DEAD_LETTER_CONSUMERS: tuple[str, ...] = ("poller-sync", "executor", "streams", "projector", "telegram")


class MessageDeadLettered(Payload):
    """A message ``consumer`` read at ``source_topic``/``source_partition``/``source_offset`` and could
    not use, kept as it arrived (``key``, ``value``) with ``reason``. The envelope's ``account_id`` is
    the message's key (or ``unknown``); its ``event_id`` is derived from the consumer and the position,
    so a redelivered message is dead-lettered under the same id."""

    event_type: ClassVar[str] = "MessageDeadLettered"

    consumer: str = Field(max_length=128, description="Who could not use it: " + ", ".join(DEAD_LETTER_CONSUMERS),
                          examples=list(DEAD_LETTER_CONSUMERS))
    source_topic: str = Field(max_length=249)
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    key: str | None = Field(default=None, description="The key as UTF-8 (invalid bytes replaced)")
    value: str = Field(description="The value as UTF-8 (invalid bytes replaced), cut to 64 KiB")
    reason: str = Field(max_length=4000)
