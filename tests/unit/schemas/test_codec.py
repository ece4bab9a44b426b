"""The wire codec: one-pass validation, clear reasons for bad input, explicit versions."""

from __future__ import annotations

import uuid

import pytest

from schemas import DecodeError, decode, derive_id, derived, encode, observed, utcnow
from schemas.codec import UPCASTERS
from schemas.envelope import DERIVED_ID_NAMESPACE, account_mismatch, derived_uuid
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.reports import AccountReport, TickReport
from schemas.topics import ACCOUNT_REPORTS, CLOSE_COMMANDS, TICKS


def _report(**changes) -> AccountReport:
    fields = dict(user_id="u1", login=5001, server="Demo-1", currency="GBP", poll_seq=3, balance=10_000.0,
                  equity=9_800.0, profit=-200.0, margin=500.0, margin_free=9_300.0, margin_level=1960.0,
                  gbp_rate=1.0)
    return AccountReport(**(fields | changes))


def test_an_envelope_survives_the_wire_unchanged():
    envelope = observed(_report(), account_id="u1", occurred_at=utcnow())
    assert decode(ACCOUNT_REPORTS, encode(envelope)) == envelope


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"", "empty message", id="empty value"),
        pytest.param(b"\xff\xfe", "malformed JSON", id="not UTF-8"),
        pytest.param(b"{", "malformed JSON", id="truncated JSON"),
        pytest.param(b"42", "expected a JSON object", id="JSON but not an object"),
        pytest.param(b'{"event_type": "TickReport"}', "does not belong on topic account-reports",
                     id="an event of another topic"),
        pytest.param(b'{"event_type": "AccountReport", "schema_version": 1}', "schema-invalid",
                     id="right type, missing fields"),
    ],
)
def test_bad_input_is_refused_with_a_reason(raw, reason):
    with pytest.raises(DecodeError) as refused:
        decode(ACCOUNT_REPORTS, raw)
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"equity": float("nan")}, "equity", id="non-finite equity"),
        pytest.param({"margin": -1.0}, "margin", id="negative margin"),
        pytest.param({"currency": "POUNDS"}, "currency", id="currency not ISO-like"),
    ],
)
def test_absurd_values_are_schema_invalid(change, field):
    envelope = observed(_report(), account_id="u1", occurred_at=utcnow())
    raw = encode(envelope).replace(b'"equity":9800.0', b'"equity":NaN') if field == "equity" else None
    if raw is None:
        data = envelope.model_dump(mode="json")
        data["payload"].update(change)
        import json

        raw = json.dumps(data).encode()
    with pytest.raises(DecodeError, match=field):
        decode(ACCOUNT_REPORTS, raw)


def test_a_newer_schema_version_is_refused_not_reinterpreted():
    current = AccountReport.schema_version
    raw = encode(observed(_report(), account_id="u1", occurred_at=utcnow())).replace(
        f'"schema_version":{current}'.encode(), f'"schema_version":{current + 1}'.encode())
    with pytest.raises(DecodeError, match="newer than this reader"):
        decode(ACCOUNT_REPORTS, raw)


def test_an_older_schema_version_is_upcast(monkeypatch):
    monkeypatch.setattr(AccountReport, "schema_version", 2)
    monkeypatch.setitem(UPCASTERS, ("AccountReport", 1), lambda p: {**p, "server": p["server"].upper()})
    from schemas.codec import _adapter

    _adapter.cache_clear()
    try:
        raw = encode(observed(_report(server="demo-1"), account_id="u1", occurred_at=utcnow()))
        raw = raw.replace(b'"schema_version":2', b'"schema_version":1')
        decoded = decode(ACCOUNT_REPORTS, raw)
    finally:
        _adapter.cache_clear()
    assert decoded.schema_version == 2 and decoded.payload.server == "DEMO-1"


def test_derived_ids_depend_only_on_the_cause_and_the_rule():
    cause = observed(_report(), account_id="u1", occurred_at=utcnow())
    command = ClosePosition(user_id="u1", symbol="EURUSD", tickets=(7,), reason=CloseReason.DRAWDOWN_GUARD,
                            rule="drawdown.critical")
    first = derived(command, cause=cause, rule="drawdown.critical/EURUSD")
    again = derived(command, cause=cause, rule="drawdown.critical/EURUSD")
    other = derived(command, cause=cause, rule="drawdown.critical/GBPUSD")
    assert first.event_id == again.event_id == derive_id(cause.event_id, "drawdown.critical/EURUSD")
    assert other.event_id != first.event_id
    assert first.causation_id == cause.event_id and first.correlation_id == cause.event_id
    assert decode(CLOSE_COMMANDS, encode(first)) == first
    assert isinstance(first.event_id, uuid.UUID)


def test_derived_ids_are_uuid5_in_the_derived_namespace():
    """``derived_uuid`` skips uuid5's per-call conversions; the ids must stay exactly uuid5's (they are stored)."""
    names = ["", "a", "scenario/1/u-bench-0/AccountReport/1704672000000", "é/ü/日本", "x" * 500,
             *(f"{uuid.UUID(int=i * 7919)}/rule-{i}" for i in range(2000))]
    for name in names:
        assert derived_uuid(name) == uuid.uuid5(DERIVED_ID_NAMESPACE, name), name
        assert derived_uuid(name).version == 5


def test_random_ids_are_uuid4_and_never_repeat():
    from schemas.envelope import random_uuid

    ids = [random_uuid() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)


def test_a_quickly_made_id_is_a_uuid_like_any_other():
    import pickle

    from schemas.envelope import random_uuid

    made = random_uuid()
    usual = uuid.UUID(str(made))
    assert made == usual and hash(made) == hash(usual) and repr(made) == repr(usual)
    assert made.is_safe == usual.is_safe and pickle.loads(pickle.dumps(made)) == usual


def test_a_forked_child_draws_ids_of_its_own():
    import os

    from schemas.envelope import random_uuid

    random_uuid()  # the parent holds a pool of bits now
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(writing, random_uuid().bytes)
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(reading, 16) != random_uuid().bytes


def test_a_payload_without_user_id_travels_under_any_account():
    tick = TickReport(symbol="EURUSD", bid=1.1, ask=1.1001, point=0.00001, quoted_at=utcnow(), market_open=True)
    assert account_mismatch("anyone", tick) is None
    assert account_mismatch("u1", _report()) is None and "differs" in (account_mismatch("u2", _report()) or "")


def test_topics_refuse_each_others_events():
    envelope = observed(_report(), account_id="u1", occurred_at=utcnow())
    with pytest.raises(DecodeError, match="does not belong"):
        decode(TICKS, encode(envelope))


def test_a_valid_payload_under_a_foreign_event_type_is_refused():
    """A payload that would validate is still refused under an event type its topic does not carry."""
    tick = TickReport(symbol="EURUSD", bid=1.085, ask=1.0851, point=0.00001, quoted_at=utcnow())
    envelope = observed(tick, account_id="u1", occurred_at=utcnow())
    assert decode(TICKS, encode(envelope)) == envelope
    renamed = envelope.model_copy(update={"event_type": "QuoteReport"})
    with pytest.raises(DecodeError, match="does not belong on topic ticks"):
        decode(TICKS, encode(renamed))


def _by_union_only(monkeypatch, topic, raw) -> object:
    """What ``decode`` gives when it cannot look the event type up in the bytes (the topic's union alone)."""
    from schemas import codec

    with monkeypatch.context() as patched:
        patched.setattr(codec, "_decode_named", lambda topic, raw: None)
        return _outcome(topic, raw)


def _outcome(topic, raw) -> object:
    try:
        return decode(topic, raw)
    except DecodeError as refused:
        return refused.reason


def _failure_bytes() -> bytes:
    from schemas.reports import AccountSyncFailed

    failure = AccountSyncFailed(user_id="u1", login=5001, poll_seq=3, stage="positions_get", error_code=-10004,
                                error_message="no IPC connection")
    return encode(observed(failure, account_id="u1", occurred_at=utcnow()))


@pytest.mark.parametrize(
    ("description", "raw"),
    [
        ("a report", lambda: encode(observed(_report(), account_id="u1", occurred_at=utcnow()))),
        ("a sync failure", _failure_bytes),
        ("named a report, a failure's payload", lambda: _failure_bytes().replace(
            b'"event_type":"AccountSyncFailed"', b'"event_type":"AccountReport"')),
        ("named twice: the last name is the one that counts", lambda: _failure_bytes().replace(
            b'"event_type":"AccountSyncFailed"', b'"event_type":"AccountReport","event_type":"AccountSyncFailed"')),
        ("named twice, the other way round", lambda: encode(observed(_report(), account_id="u1",
            occurred_at=utcnow())).replace(b'"event_type":"AccountReport"',
                                           b'"event_type":"AccountSyncFailed","event_type":"AccountReport"')),
        ("a bad field", lambda: encode(observed(_report(), account_id="u1", occurred_at=utcnow())).replace(
            b'"login":5001', b'"login":"5001"')),
        ("an older version", lambda: _failure_bytes().replace(b'"schema_version":1', b'"schema_version":0')),
        ("another account", lambda: encode(observed(_report(), account_id="u1", occurred_at=utcnow())).replace(
            b'"account_id":"u1"', b'"account_id":"u2"')),
        ("an escaped name", lambda: _failure_bytes().replace(b'"event_type":"AccountSyncFailed"',
                                                             b'"event_type":"AccountSync\\u0046ailed"')),
        ("a name of another topic", lambda: _failure_bytes().replace(b'"event_type":"AccountSyncFailed"',
                                                                     b'"event_type":"TickReport"')),
    ],
)
def test_a_topic_of_several_payloads_decodes_as_its_union_does(monkeypatch, description, raw):
    """``decode`` validates such a message directly as the type its bytes name (quicker than the union's
    choice by a Python function): the same envelopes and the same refusals, reasons included."""
    message = raw()
    assert _outcome(ACCOUNT_REPORTS, message) == _by_union_only(monkeypatch, ACCOUNT_REPORTS, message), description


def test_encoded_bytes_are_the_models_own_json():
    tick = TickReport(symbol="EURUSD", bid=1.1, ask=1.1001, point=0.00001, quoted_at=utcnow(), market_open=True)
    for envelope in (observed(_report(server="Démo-1"), account_id="u1", occurred_at=utcnow()),
                     observed(tick, account_id="u1", occurred_at=utcnow())):
        assert encode(envelope) == envelope.model_dump_json().encode()


def test_envelopes_encoded_together_are_the_bytes_of_each_alone():
    """``encode_all`` serialises a shared payload once and writes it after its envelope's other fields: the
    bytes must be ``encode``'s, whatever the envelope carries (ids or none, text to escape, a shared report)."""
    from schemas import encode_all

    tick = TickReport(symbol="EURUSD", bid=1.1, ask=1.1001, point=0.00001, quoted_at=utcnow(), market_open=True)
    report = _report(server='Démo "1"\\')
    cause = observed(report, account_id="u1", occurred_at=utcnow())
    command = ClosePosition(user_id="u1", symbol="EURUSD", tickets=(7,), reason=CloseReason.DRAWDOWN_GUARD,
                            rule="drawdown.critical", details={"why": "é\n"})
    envelopes = [*(observed(tick, account_id=f'u{i} "é"', occurred_at=utcnow()) for i in range(3)), cause, cause,
                 derived(command, cause=cause, rule="a"), derived(command, cause=cause, rule="b"),
                 observed(TickReport(symbol="GBPUSD", bid=1.2, ask=1.2001, point=0.00001, quoted_at=utcnow()),
                          account_id="u1", occurred_at=utcnow())]
    assert encode_all(envelopes) == [encode(e) for e in envelopes]
    assert encode_all([]) == []
