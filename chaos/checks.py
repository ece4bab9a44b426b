"""What a chaos round checks, from the log and from the simulated terminals' own history.

Pure functions (``liquidations``, ``closes_per_position``) judge plain records; ``read_log`` and
``read_deals`` fetch them. A liquidation is a critical-level warning (``positions close in N s``):
- executed: every position its close commands named is closed on the terminal, and a liquidation
  that found nothing to close said so (its "executed" alert with 0 positions, or "superseded": the
  market guard, a stop or a hand closed them before the deadline; the drives the harness opened are
  counted apart, as "drives not closed", so a position left open never passes as superseded);
- notice: from the moment the warning was published (its record's timestamp) to the closing deal of
  one of its own commands (the terminal's clock; the deal's comment names the command) is at least
  the grace; a position the market guard closed first (at once, on a gap) is not this liquidation's;
- on time: that deal is at most ``bound`` seconds after the deadline, unless the terminal (the
  simulator) was down at some point between the deadline and the close.
The simulator's clock moves in steps of at most 50 ms, so a deal's time may read up to 50 ms early
(more while its clock thread waits for the interpreter). A position cannot close before the command
that closes it was appended, so the notice runs to the later of the closing deal's time and the
liquidation's first command's: still never later than the close really was.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from infra.internals import refresh_metadata
from infra.kafka import caught_up, make_consumer
from infra.settings import Settings
from producers.mt5 import constants as c
from producers.executor.parsing import CloseSettings, close_comment
from schemas import DecodeError, decode
from schemas.decisions import ActionTaken, AlertType
from schemas.topics import ALERTS, CLOSE_COMMANDS, CLOSE_RESULTS

EXECUTOR_MAGIC = CloseSettings().magic
CRITICAL = (AlertType.DRAWDOWN_CRITICAL, AlertType.DAILY_LOSS_CRITICAL)


@dataclass(frozen=True)
class Record:
    """One decoded message and the time its record was appended (CreateTime, seconds)."""

    envelope: Any
    timestamp: float


@dataclass(frozen=True)
class Deal:
    login: int
    ticket: int
    position_id: int
    entry: int
    magic: int
    volume: float
    time: float
    comment: str = ""


@dataclass
class Liquidation:
    alert_id: str  # the liquidation's: its warning's id, which its commands and later states carry
    user_id: str
    warned_at: float
    deadline: float
    grace: float
    tickets: set[int] = field(default_factory=set)
    commands: int = 0
    nothing_to_close: bool = False
    closed_at: dict[int, float] = field(default_factory=dict)  # ticket -> executor's closing deal time
    still_open: set[int] = field(default_factory=set)
    command_ids: set[str] = field(default_factory=set)
    outcomes: list[str] = field(default_factory=list)  # what the executor answered, for the report
    command_times: list[float] = field(default_factory=list)  # when each close command was appended

    @property
    def executed(self) -> bool:
        return (self.nothing_to_close or bool(self.tickets)) and not self.still_open

    @property
    def last_close(self) -> float | None:
        return max(self.closed_at.values()) if self.closed_at else None


@dataclass(frozen=True)
class LiquidationVerdict:
    total: int
    due: int
    not_executed: list[str]
    short_notice: list[str]
    late: list[str]
    excused: list[str]  # late, but the terminal was down in the way
    min_notice: float | None


def liquidations(alerts: Iterable[Record], commands: Iterable[Record],
                 results: Iterable[Record] = ()) -> dict[str, Liquidation]:
    """Every critical warning, the close commands it led to and their results, by the liquidation's id:
    its warning's, which every command and later state of it carries as ``alert_id``. A warning published
    again (the trigger derived again after a restart) is the same liquidation: its first publication
    gives the notice and the deadline the owner was told."""
    found: dict[str, Liquidation] = {}
    for record in alerts:
        alert = record.envelope.payload
        if alert.alert_type not in CRITICAL:
            continue
        alert_id = str(alert.alert_id or record.envelope.event_id)
        if (alert.action_taken is ActionTaken.WARNING_SENT and "deadline" in alert.details
                and alert.status == "open"):
            found.setdefault(alert_id, Liquidation(
                alert_id, alert.user_id, record.timestamp, datetime.fromisoformat(alert.details["deadline"]).timestamp(),
                float(alert.details["close_grace_seconds"])))
        elif alert_id in found and (alert.action_taken is ActionTaken.POSITIONS_CLOSED and
                                    alert.positions_closed_count == 0 or alert.status == "superseded"):
            found[alert_id].nothing_to_close = True  # or something else (the market guard, a stop) closed them first
    for record in commands:
        liquidation = found.get(str(record.envelope.payload.alert_id))
        if liquidation is not None:
            liquidation.commands += 1
            liquidation.command_times.append(record.timestamp)
            liquidation.tickets.update(record.envelope.payload.tickets)
            liquidation.command_ids.add(str(record.envelope.event_id))
    by_command = {i: f for f in found.values() for i in f.command_ids}
    for record in results:
        result = record.envelope.payload
        liquidation = by_command.get(str(result.command_id))
        if liquidation is not None:
            liquidation.outcomes.append(f"{record.envelope.event_type} {result.ticket} retcode {result.retcode} "
                                        f"{result.error_message or ''}".strip()
                                        + f" (appended {record.timestamp - liquidation.deadline:+.1f} s)")
    return found


def attach_closes(found: dict[str, Liquidation], deals: Sequence[Deal], open_tickets: set[int]) -> None:
    """Each liquidation's closing deals made by its own commands (the executor's comment names the
    command), and which of its positions are still open. A position another command closed first (the
    market guard's, on a gap: it closes at once, with no notice) is closed, but not by this liquidation,
    so that close is judged neither for this liquidation's notice nor for its lateness."""
    closing = {(d.position_id, d.comment): d.time for d in sorted(deals, key=lambda d: d.time, reverse=True)
               if d.magic == EXECUTOR_MAGIC and d.entry in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY)}
    for liquidation in found.values():
        own = {close_comment(uuid.UUID(command)) for command in liquidation.command_ids}
        liquidation.closed_at = {t: at for (t, comment), at in closing.items()
                                 if t in liquidation.tickets and comment in own}
        liquidation.still_open = liquidation.tickets & open_tickets


def judge(found: dict[str, Liquidation], *, now: float, bound: float,
          terminal_down: Sequence[tuple[float, float | None]]) -> LiquidationVerdict:
    """The liquidations whose deadline is ``bound`` seconds past, judged (see the module docstring)."""
    due = [f for f in found.values() if f.deadline + bound < now]
    not_executed = [f.alert_id for f in due if not f.executed]
    notices = [(f, _closed_no_earlier_than(f) - f.warned_at) for f in due if f.last_close is not None]
    short = [f.alert_id for f, notice in notices if notice < f.grace]
    late, excused = [], []
    for f in due:
        if f.last_close is not None and f.last_close - f.deadline > bound:
            was_down = any(start <= f.last_close and (end is None or end >= f.deadline) for start, end in terminal_down)
            (excused if was_down else late).append(f.alert_id)
    return LiquidationVerdict(len(found), len(due), not_executed, short, late, excused,
                              min((n for _, n in notices), default=None))


def _closed_no_earlier_than(liquidation: Liquidation) -> float:
    """When the last close happened at the earliest: its deal's time (the simulator's clock, which may
    read early) or, if later, the append of the liquidation's first close command (no close precedes it)."""
    assert liquidation.last_close is not None
    return max(liquidation.last_close, min(liquidation.command_times, default=liquidation.last_close))


def open_positions(deals: Iterable[Deal]) -> set[int]:
    """Positions whose deals in exceed their deals out (hedging accounts: by position id)."""
    held: dict[int, float] = defaultdict(float)
    for deal in deals:
        if deal.entry == c.DEAL_ENTRY_IN:
            held[deal.position_id] += deal.volume
        elif deal.entry in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY):
            held[deal.position_id] -= deal.volume
    return {position for position, volume in held.items() if volume > 1e-9}


def closes_per_position(deals: Iterable[Deal]) -> tuple[int, int]:
    """(positions the executor closed more than once, positions a close opened): both must be 0."""
    closes: dict[int, int] = defaultdict(int)
    opened = 0
    for deal in deals:
        if deal.magic != EXECUTOR_MAGIC:
            continue
        if deal.entry in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY):
            closes[deal.position_id] += 1
        elif deal.entry in (c.DEAL_ENTRY_IN, c.DEAL_ENTRY_INOUT):
            opened += 1
    return sum(1 for n in closes.values() if n > 1), opened


# -- reading ----------------------------------------------------------------------------------------------

async def read_log(settings: Settings) -> dict[str, list[Record]]:
    """Every alert, close command and close result, from the beginning to the end as fetched now."""
    assert settings.kafka_bootstrap_servers
    topics = {t.name(settings.topic_prefix): t for t in (ALERTS, CLOSE_COMMANDS, CLOSE_RESULTS)}
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    found: dict[str, list[Record]] = {t.base: [] for t in topics.values()}
    try:
        await refresh_metadata(consumer)
        partitions = [TopicPartition(name, p) for name in topics
                      for p in sorted(consumer.partitions_for_topic(name) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, messages in batches.items():
                topic = topics[tp.topic]
                for message in messages:
                    try:
                        found[topic.base].append(Record(decode(topic, message.value), message.timestamp / 1000))
                    except DecodeError:
                        continue  # the dead-letter topic has those; not ours to judge
            if not batches and await caught_up(consumer, partitions):
                return found
    finally:
        await consumer.stop()


def read_deals(broker: Any, logins: Iterable[int]) -> list[Deal]:
    """Every deal of these accounts, from the simulator (by value), timed in UTC."""
    offset = server_offset(broker)
    return [Deal(login, d.ticket, d.position_id, d.entry, d.magic, d.volume, d.time_msc / 1000 - offset, d.comment)
            for login in logins for d in broker.deals(login)]


def server_offset(broker: Any) -> float:
    """How far the terminals' clock runs ahead of UTC (MT5 writes server time labelled as UTC), to the
    minute; 0 for a simulator without a server clock of its own."""
    try:
        return round((broker.server_now() - broker.now()) / 60) * 60
    except AttributeError:
        return 0.0


def still_open_drives(deals: Sequence[Deal], comment: str) -> list[Deal]:
    """The positions the harness opened (marked by ``comment``) that nobody has closed."""
    open_now = open_positions(deals)
    return [d for d in deals if d.comment == comment and d.entry == c.DEAL_ENTRY_IN and d.position_id in open_now]
