"""Bytes on the wire to envelopes and back: JSON, validated in one pass.

Faust topics carry raw bytes (it has no pydantic support), so this module is the only place
the wire format is defined. Old schema versions are upcast here, never reinterpreted.

Decoding is strict, for every payload declared now or later: a JSON value must already have the
type the published JSON Schema gives it (``"1"`` is not an integer, ``"0.1"`` not a number,
``true`` not a number); only what JSON cannot carry natively arrives as text (times, ids, enums).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from schemas.envelope import Envelope, P, Payload, account_mismatch, envelope_of
from schemas.reports import UPCASTS as REPORT_UPCASTS
from schemas.topics import Topic

#: (event_type, from_version) -> function turning that version's payload dict into the next version's.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {**REPORT_UPCASTS}


class DecodeError(ValueError):
    """A message that cannot be used; ``reason`` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(envelope: Envelope[Any]) -> bytes:
    """``envelope.model_dump_json()`` as bytes, taken from the serializer as bytes: the text it returns is
    those bytes decoded, which ``encode`` then had to encode again (a few microseconds a message)."""
    return envelope.__pydantic_serializer__.to_json(envelope)


def encode_all(envelopes: Sequence[Envelope[Any]]) -> list[bytes]:
    """``[encode(e) for e in envelopes]``, the same bytes, with a payload that several of them carry (a
    round's tick report: one quote, the same for every account of a trade server) serialised once.

    An envelope writes its payload last, so its bytes are the other fields' and then the payload's own:
    a shared payload costs only its envelope's other fields (about half an envelope's serialising)."""
    carried = Counter(id(e.payload) for e in envelopes)
    shared: dict[int, bytes] = {}
    encoded = []
    for envelope in envelopes:
        payload = envelope.payload
        if carried[id(payload)] < 2:
            encoded.append(envelope.__pydantic_serializer__.to_json(envelope))
            continue
        body = shared.get(id(payload))
        if body is None:
            body = shared[id(payload)] = _PAYLOAD_KEY + payload.__pydantic_serializer__.to_json(payload) + b"}"
        encoded.append(envelope.__pydantic_serializer__.to_json(envelope, exclude=_PAYLOAD)[:-1] + body)
    return encoded


#: What ``encode_all`` writes between an envelope's other fields and a shared payload (as ``encode`` does).
_PAYLOAD_KEY = b',"payload":'
_PAYLOAD = frozenset({"payload"})


def encode_key(account_id: str) -> bytes:
    return account_id.encode()


def _event_type_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("event_type")
    return getattr(value, "event_type", None)


@cache
def _adapter(topic: Topic) -> TypeAdapter[Any]:
    """The topic's envelopes; a union of them, chosen by ``event_type``, when it carries several.

    A one-payload topic validates its one envelope directly (a discriminator around a single
    type costs a third of the validation); ``decode`` checks the event type afterwards."""
    if len(topic.payloads) == 1:
        return TypeAdapter(envelope_of(topic.payloads[0]))
    variants = tuple(Annotated[envelope_of(p), Tag(p.event_type)] for p in topic.payloads)
    return TypeAdapter(Annotated[Union[variants], Discriminator(_event_type_of)])  # noqa: UP007 - built at runtime


def decode(topic: Topic, raw: bytes | None) -> Envelope[Any]:
    """The envelope in ``raw``, or DecodeError saying what is wrong with it."""
    if not raw:
        raise DecodeError("empty message")
    envelope = _decode_named(topic, raw)
    if envelope is not None:
        return _one_account(envelope)
    try:
        envelope = _adapter(topic).validate_json(raw, strict=True)
    except ValidationError as error:
        return _decode_slowly(topic, raw, error)
    payload_type = type(envelope.payload)  # the topic's payload for this event type, as validated
    if envelope.event_type != payload_type.event_type or envelope.schema_version != payload_type.schema_version:
        return _decode_slowly(topic, raw, None)  # another version to upcast, or a type foreign to the topic
    return _one_account(envelope)


#: How ``encode`` writes the event type (second, after the event id): where ``_decode_named`` looks for it.
_EVENT_TYPE_MARK = b'"event_type":"'


def _decode_named(topic: Topic, raw: bytes) -> Envelope[Any] | None:
    """The envelope validated directly as the payload type its ``event_type`` names, where that is quick
    to see in the bytes; None to take the topic's union instead (which then also says what is wrong).

    Only for topics of several payloads: their union chooses by a Python function of the whole message
    parsed into Python objects, which cost three quarters again of the validation itself. The same type
    is chosen: the envelope is kept only if its validated ``event_type`` (the message's last key of that
    name, which the union's choice reads too) is the one found, and of the current version."""
    if len(topic.payloads) < 2 or type(raw) is not bytes:
        return None
    start = raw.find(_EVENT_TYPE_MARK)
    if start < 0:
        return None
    start += len(_EVENT_TYPE_MARK)
    adapter = _variants(topic).get(raw[start:raw.find(b'"', start)])
    if adapter is None:
        return None
    try:
        envelope = adapter.validate_json(raw, strict=True)
    except ValidationError:
        return None
    payload_type = type(envelope.payload)
    if envelope.event_type != payload_type.event_type or envelope.schema_version != payload_type.schema_version:
        return None
    return envelope


@cache
def _variants(topic: Topic) -> dict[bytes, TypeAdapter[Any]]:
    """Each of the topic's envelopes alone, by its event type as the wire writes it."""
    return {p.event_type.encode(): TypeAdapter(envelope_of(p)) for p in topic.payloads}


def _one_account(envelope: Envelope[Any]) -> Envelope[Any]:
    mismatch = account_mismatch(envelope.account_id, envelope.payload)
    if mismatch is not None:
        raise DecodeError(f"schema-invalid: {mismatch}")
    return envelope


def _decode_slowly(topic: Topic, raw: bytes, error: ValidationError | None) -> Envelope[Any]:
    """Explain a failure precisely, or upcast an older schema version."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as bad_json:
        raise DecodeError(f"malformed JSON: {bad_json}") from None
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object, got {type(data).__name__}")
    event_type = data.get("event_type")
    payload_type = topic.payload_for(event_type) if isinstance(event_type, str) else None
    if payload_type is None:
        raise DecodeError(f"event_type {event_type!r} does not belong on topic {topic.base}")
    version = data.get("schema_version")
    if type(version) is int and version != payload_type.schema_version:  # JSON true is no version
        data = _upcast(data, payload_type, version)
    elif error is not None:
        raise DecodeError(_describe(error))
    try:  # as JSON again: strict validation of Python objects would refuse a time given as text
        return _one_account(_adapter(topic).validate_json(json.dumps(data), strict=True))
    except ValidationError as again:
        raise DecodeError(_describe(again)) from None


def _upcast(data: dict[str, Any], payload_type: type[Payload], version: int) -> dict[str, Any]:
    if version > payload_type.schema_version:
        raise DecodeError(f"{payload_type.event_type} schema_version {version} is newer than this reader "
                          f"({payload_type.schema_version})")
    while version < payload_type.schema_version:
        step = UPCASTERS.get((payload_type.event_type, version))
        if step is None:
            raise DecodeError(f"no upcaster for {payload_type.event_type} v{version}")
        data = {**data, "payload": step(data.get("payload", {})), "schema_version": version + 1}
        version += 1
    return data


def decode_payload(payload_type: type[P], raw: str | bytes) -> P:
    """One payload typed by a person or sent by a client (``publish-trade``), as strictly as ``decode``.

    Raises DecodeError naming every bad field."""
    try:
        return payload_type.model_validate_json(raw, strict=True)
    except ValidationError as error:
        raise DecodeError(_describe(error)) from None


def _describe(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5]]
    return "schema-invalid: " + "; ".join(parts)
