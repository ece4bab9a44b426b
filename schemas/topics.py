"""Every topic, its key and its payloads, declared once. Everything else imports these.

Topic names are ``{prefix}.{base}.v{version}``; the prefix is configuration (tests give each
module its own). The key of every topic is the account id (the envelope's ``account_id``), so
one account's messages stay in order on one partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from schemas.commands import ClosePosition, SyncAccount
from schemas.deadletters import MessageDeadLettered
from schemas.decisions import (
    AccountAssessed,
    BindingRevised,
    DivergenceDetected,
    DivergenceResolved,
    GuardAlertRaised,
    PositionCloseRecorded,
    PositionMatched,
    ReconciliationIndeterminate,
)
from schemas.envelope import Payload
from schemas.operations import OperatorAlertRaised
from schemas.locks import AccountLocked, AccountUnlocked, UnlockAccount
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.reports import AccountReport, AccountSyncFailed, PositionReport, TickReport
from schemas.results import (
    PositionClosed,
    PositionCloseDeferred,
    PositionCloseFailed,
    PositionCloseSuperseded,
)


DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    base: str
    version: int
    payloads: tuple[type[Payload], ...]
    description: str
    written_by: str  # the service that appends to it ("any" for the dead letters)
    key: str = "account_id"
    #: How long the broker keeps the log (``retention.ms``); the archive keeps every event beyond it.
    retention_ms: int = 7 * DAY_MS
    #: Every topic is a log of facts, so "delete": compaction would keep one message per account.
    cleanup_policy: str = "delete"

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.base}.v{self.version}"

    def configs(self) -> dict[str, str]:
        """The topic's configuration at creation (Kafka's names and string values)."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}

    def payload_for(self, event_type: str) -> type[Payload] | None:
        return self._payload_of.get(event_type)

    @cached_property
    def _payload_of(self) -> dict[str, type[Payload]]:
        return {p.event_type: p for p in self.payloads}


ACCOUNT_REPORTS = Topic("account-reports", 1, (AccountReport, AccountSyncFailed),
                        "Poller: account_info() of each poll, or why the poll failed.", "poller",
                        retention_ms=3 * DAY_MS)
POSITION_REPORTS = Topic("position-reports", 1, (PositionReport,),
                         "Poller: the full open-position list of each poll, with closing deals.", "poller",
                         retention_ms=3 * DAY_MS)
TICKS = Topic("ticks", 1, (TickReport,), "Poller: last quotes of the symbols each account holds.", "poller",
              retention_ms=DAY_MS)
EXPECTED_TRADES = Topic("expected-trades", 1, (TradeApproved, TradeClosedByPlatform),
                        "Platform: approved trades and the platform's own closes.", "platform")
RECONCILIATION = Topic("reconciliation", 1,
                       (PositionMatched, DivergenceDetected, DivergenceResolved, ReconciliationIndeterminate,
                        PositionCloseRecorded, BindingRevised),
                       "Streams: reconciliation outcomes (one reconciliation_logs row each).", "streams")
ACCOUNT_STATE = Topic("drawdown-state", 1, (AccountAssessed,),
                      "Streams: drawdown guard's assessment per report (position_snapshots).", "streams",
                      retention_ms=3 * DAY_MS)
ALERTS = Topic("alerts", 1, (GuardAlertRaised,), "Streams: guard warnings and triggers (drawdown_alerts).",
               "streams")
CLOSE_COMMANDS = Topic("close-commands", 1, (ClosePosition,), "Streams: positions to close, and why.", "streams")
CLOSE_RESULTS = Topic("close-results", 1, (PositionClosed, PositionCloseFailed, PositionCloseSuperseded,
                                           PositionCloseDeferred),
                      "Executor: what each close command did, per ticket.", "executor")
SYNC_COMMANDS = Topic("sync-commands", 1, (SyncAccount,), "API/ops: manual sync requests.", "api")
ACCOUNT_LOCKS = Topic("account-locks", 1, (AccountLocked, AccountUnlocked),
                      "Streams: an account locked after a liquidation (the platform stops approving its trades), "
                      "and unlocked.", "streams")
LOCK_COMMANDS = Topic("lock-commands", 1, (UnlockAccount,), "API/command line: an admin ends an account's lock.",
                      "api")
DEAD_LETTERS = Topic("dead-letters", 1, (MessageDeadLettered,),
                     "Any consumer: messages it could not use, with the reason.", "any",
                     retention_ms=30 * DAY_MS)
OPERATOR_ALERTS = Topic("operator-alerts", 1, (OperatorAlertRaised,),
                        "Supervisor and worker: what an operator must look at (crash loops, late warnings).",
                        "operations", retention_ms=30 * DAY_MS)

ALL_TOPICS: tuple[Topic, ...] = (
    ACCOUNT_REPORTS, POSITION_REPORTS, TICKS, EXPECTED_TRADES, RECONCILIATION, ACCOUNT_STATE, ALERTS,
    CLOSE_COMMANDS, CLOSE_RESULTS, SYNC_COMMANDS, DEAD_LETTERS, OPERATOR_ALERTS, ACCOUNT_LOCKS, LOCK_COMMANDS,
)


#: The topic each event type travels on (every event type belongs to exactly one topic).
TOPIC_OF_EVENT: dict[str, Topic] = {payload.event_type: topic for topic in ALL_TOPICS for payload in topic.payloads}


def written_by(service: str) -> tuple[Topic, ...]:
    """The topics ``service`` appends to (its outputs)."""
    return tuple(topic for topic in ALL_TOPICS if topic.written_by == service)


def topic_by_name(name: str, prefix: str) -> Topic:
    for topic in ALL_TOPICS:
        if topic.name(prefix) == name:
            return topic
    raise KeyError(f"no topic named {name!r} under prefix {prefix!r}")
