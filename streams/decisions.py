"""Small pieces every rule module shares: a decision (new state + messages) and a cause reference.

Outputs are made with ``schemas.envelope.derived`` so their ids are uuid5(cause, rule). A deadline
that fires later than its cause keeps only a ``CauseRef`` in state, which ``derived`` accepts in
place of the whole envelope (it reads the id, time, account and correlation only).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from schemas import Envelope

S = TypeVar("S")
T = TypeVar("T")


@dataclass(slots=True)
class Decision(Generic[S]):
    """What a rule concluded from one event: the account's next state and the messages to publish.

    A value the caller reads once (nothing changes one): built for every event by every rule that reads
    it, so not frozen, as a frozen dataclass's ``__init__`` takes three times as long."""

    state: S
    outputs: tuple[Envelope[Any], ...] = ()


@dataclass(frozen=True)
class CauseRef:
    """The parts of an envelope that ``derived`` uses, kept in state for decisions made later."""

    event_id: uuid.UUID
    occurred_at: datetime
    account_id: str
    correlation_id: uuid.UUID | None = None

    @classmethod
    def of(cls, envelope: Envelope[Any]) -> CauseRef:
        return cls(envelope.event_id, envelope.occurred_at, envelope.account_id, envelope.correlation_id)


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` for the rules' frozen dataclasses, without its per-call field walk.

    The states have no ``__post_init__``, no ``init=False`` fields and no slots, so a copy of the
    instance dict with the changes applied is the same object ``dataclasses.replace`` would build. The
    dict is copied whole and given to the new object (a third quicker than filling its empty dict key by
    key: the rules replace a state several times per poll).
    """
    new = object.__new__(type(obj))
    fields = obj.__dict__.copy()
    fields.update(changes)
    object.__setattr__(new, "__dict__", fields)  # frozen: its own __setattr__ refuses
    return new


def percent_off(value: float, reference: float) -> float:
    """|value - reference| as a percentage of reference (0 when reference is 0).

    One ``abs`` of the quotient: IEEE division rounds the same whatever the signs, so it is bit for bit
    ``abs(value - reference) / abs(reference)``."""
    return abs((value - reference) / reference) * 100 if reference else 0.0
