"""The one envelope every message travels in, and the rules for making ids.

A message is immutable. Its id is random for an observation and, for anything derived from
another message, a pure function of the cause and the rule (uuid5), so reprocessing yields
the same ids and receivers dedupe them.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Namespace of every derived id (uuid5). Changing it changes every derived id: never do.
DERIVED_ID_NAMESPACE = uuid.UUID("6c1f8a5e-3f0b-5a8e-9d57-2f7c9b0e4a11")


class Payload(BaseModel):
    """Base of every payload; subclasses name their event type and schema version."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    #: Rules across fields that JSON Schema cannot say, as ``{id: sentence}``; the decoder enforces
    #: them and the published schema lists them (``x-rules``). A subclass adds its own.
    rules: ClassVar[dict[str, str]] = {}


P = TypeVar("P", bound=Payload)


#: The envelope's own rule across fields (see ``Payload.rules``).
ENVELOPE_RULES = {"account-is-user": "account_id equals payload.user_id whenever the payload has a user_id"}


class Envelope(BaseModel, Generic[P]):
    """What happened, to which account, when, and because of what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    event_type: str
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime = Field(description="When it happened (terminal or decision time).")
    recorded_at: AwareDatetime = Field(description="When this message was created.")
    account_id: str = Field(min_length=1, max_length=64, description="Partition key: the MT5 account.")
    correlation_id: uuid.UUID | None = Field(default=None, description="The first event of the chain.")
    causation_id: uuid.UUID | None = Field(default=None, description="The event that caused this one.")
    payload: P


def account_mismatch(account_id: str, payload: Payload) -> str | None:
    """Why ``payload`` may not travel under ``account_id`` (ENVELOPE_RULES), or None.

    Checked by the decoder and by ``observed``/``derived`` rather than by a model validator: a
    Python validator on every envelope would cost the decoder a large share of its speed."""
    user_id = payload.__dict__.get("user_id") if _user_id_in_dict(type(payload)) else getattr(payload, "user_id", None)
    if user_id is not None and user_id != account_id:
        return f"account_id {account_id!r} differs from payload.user_id {user_id!r}"
    return None


@cache
def _user_id_in_dict(payload_type: type) -> bool:
    """Whether a payload of this type keeps any ``user_id`` in its instance dict (read from there: a pydantic
    ``getattr`` that misses goes through ``__getattr__`` and an exception, microseconds per event)."""
    fields = getattr(payload_type, "model_fields", {})
    return "user_id" in fields or not hasattr(payload_type, "user_id") and \
        getattr(payload_type, "model_config", {}).get("extra") != "allow"


def _same_account(account_id: str, payload: Payload) -> str:
    mismatch = account_mismatch(account_id, payload)
    if mismatch is not None:
        raise ValueError(mismatch)
    return account_id


@cache
def envelope_of(payload_type: type[Payload]) -> type[Envelope[Any]]:
    """``Envelope[payload_type]``, looked up once: parametrising a generic model costs microseconds."""
    return Envelope[payload_type]  # type: ignore[valid-type]


@cache
def _envelope_validator(payload_type: type[Payload]) -> Callable[[dict[str, Any]], Envelope[Any]]:
    """``envelope_of(payload_type).model_validate``, the same validation without that method's Python
    wrapper around it (a fifth of an envelope's making, and the poller makes several per account)."""
    return envelope_of(payload_type).__pydantic_validator__.validate_python


def utcnow() -> datetime:
    return datetime.now(UTC)


def derive_id(cause_id: uuid.UUID, rule: str) -> uuid.UUID:
    """The id of what ``rule`` derives from the event ``cause_id``: the same inputs, the same id."""
    return derived_uuid(f"{cause_id}/{rule}")


_NAMESPACE_BYTES = DERIVED_ID_NAMESPACE.bytes
#: RFC 4122's variant bits cleared, then set, and a version's bits cleared (``uuid.UUID.__init__``'s masks).
_KEEP = ~(0xC000 << 48) & ~(0xF000 << 64)
_RFC_4122 = 0x8000 << 48


def derived_uuid(name: str) -> uuid.UUID:
    """``uuid.uuid5(DERIVED_ID_NAMESPACE, name)``, the same value, without its per-call conversions."""
    digest = int.from_bytes(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    return _uuid_of(digest & _KEEP | _RFC_4122 | (5 << 76))


def random_uuid() -> uuid.UUID:
    """``uuid.uuid4()``, from the same source (``os.urandom``) taken a few kilobytes at a time: one system
    call and one ``UUID.__init__`` per id were a tenth of the poller's envelopes."""
    try:
        bits = _random_bits.popleft()
    except IndexError:  # popleft is atomic: threads sharing the pool never get the same bits
        block = os.urandom(16 * 256)
        _random_bits.extend(int.from_bytes(block[i:i + 16]) for i in range(16, len(block), 16))
        bits = int.from_bytes(block[:16])
    return _uuid_of(bits & _KEEP | _RFC_4122 | (4 << 76))


_random_bits: deque[int] = deque()
# A forked child must not hand out the ids its parent still holds.
os.register_at_fork(after_in_child=_random_bits.clear)

_new_uuid = uuid.UUID.__new__
# The two slots of a UUID, set through their descriptors: ``object.__setattr__`` looks each name up first,
# and ``uuid.SafeUUID.unknown`` is an enum property read twice per id (a third of an id's cost together).
_set_int = uuid.UUID.__dict__["int"].__set__
_set_is_safe = uuid.UUID.__dict__["is_safe"].__set__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def _uuid_of(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` for a value already in range with its version set, as ``UUID`` itself
    fills its two slots (``UUID.__init__``'s checks and conversions cost more than the rest of an id)."""
    made = _new_uuid(uuid.UUID)
    _set_int(made, value)
    _set_is_safe(made, _UNKNOWN_SAFETY)
    return made


def observed(
    payload: P, *, account_id: str, occurred_at: datetime, event_id: uuid.UUID | None = None,
    correlation_id: uuid.UUID | None = None,
) -> Envelope[P]:
    """An envelope for a new observation or an outside input (a report, an approved trade)."""
    return _envelope_validator(type(payload))({  # a dict: quicker to validate than keyword arguments
        "event_id": event_id or random_uuid(),
        "event_type": payload.event_type,
        "schema_version": payload.schema_version,
        "occurred_at": occurred_at,
        "recorded_at": utcnow(),
        "account_id": _same_account(account_id, payload),
        "correlation_id": correlation_id,
        "payload": payload,
    })


def derived(
    payload: P, *, cause: Envelope[Any], rule: str, occurred_at: datetime | None = None,
    account_id: str | None = None,
) -> Envelope[P]:
    """An envelope for an event or command that ``rule`` derived from ``cause``."""
    return _envelope_validator(type(payload))({
        "event_id": derive_id(cause.event_id, rule),
        "event_type": payload.event_type,
        "schema_version": payload.schema_version,
        "occurred_at": occurred_at or cause.occurred_at,
        "recorded_at": utcnow(),
        "account_id": _same_account(account_id or cause.account_id, payload),
        "correlation_id": cause.correlation_id or cause.event_id,
        "causation_id": cause.event_id,
        "payload": payload,
    })
