"""A message a consumer could not use, kept with the reason."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.envelope import Payload


class MessageDeadLettered(Payload):
    event_type: ClassVar[str] = "MessageDeadLettered"

    consumer: str = Field(max_length=128)
    source_topic: str = Field(max_length=249)
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    key: str | None = Field(default=None, description="The key as UTF-8 (invalid bytes replaced)")
    value: str = Field(description="The value as UTF-8 (invalid bytes replaced), cut to 64 KiB")
    reason: str = Field(max_length=4000)
