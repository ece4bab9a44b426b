"""Observations the poller publishes: what the terminal said, never a conclusion.

Version 2 of the three reports: every time is true UTC (the poller has taken the broker's server
clock offset off), and the times as the terminal wrote them (its server clock, labelled UTC as MT5
does) stay beside them for the audit. Version 1 is still read: its times were server times taken
as UTC, and are upcast unchanged (``UPCASTS``), with the new fields unknown.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.common import DealEntry, DealReason, Direction, Money, Price, Symbol, Ticket, UserId, Volume
from schemas.envelope import Payload


class MoneyFlowKind(StrEnum):
    """Balance operations in the deal history that are not trading results (MT5's DEAL_TYPE_*)."""

    BALANCE = "balance"  # deposits and withdrawals
    CREDIT = "credit"
    CHARGE = "charge"
    CORRECTION = "correction"
    BONUS = "bonus"


class MoneyFlow(BaseModel):
    """A deposit, withdrawal, credit or bonus deal: money in or out that no trade made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ticket: Ticket
    kind: MoneyFlowKind
    amount: Money = Field(description="In the account currency; negative for a withdrawal")
    amount_gbp: Money
    time: AwareDatetime = Field(description="True UTC")
    server_time: AwareDatetime = Field(description="As the terminal wrote it (server clock)")
    comment: str = Field(default="", max_length=64)
    after_previous_poll: bool = Field(
        default=False, description="The poller's previous read of this account did not have this deal, and a "
        "read takes the account figures before the deal history: the deal is not in the previous report's "
        "balance. False on a poller's first read of an account (a look-back over the last day), and when the "
        "deal is repeated from an earlier report.")


class AccountReport(Payload):
    """``account_info()`` of one poll, with the rate that turns account money into GBP."""

    event_type: ClassVar[str] = "AccountReport"
    schema_version: ClassVar[int] = 2

    user_id: UserId
    login: int = Field(ge=1)
    server: str = Field(min_length=1, max_length=128)
    currency: str = Field(min_length=3, max_length=3)
    poll_seq: int = Field(ge=0)
    balance: Money
    equity: Money
    profit: Money
    margin: Money = Field(ge=0)
    margin_free: Money
    margin_level: float = Field(ge=0, allow_inf_nan=False, description="equity / margin * 100; 0 if no margin")
    gbp_rate: float = Field(gt=0, allow_inf_nan=False, description="GBP per unit of account currency")
    gbp_rate_inverse: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                           description="The same rate through the opposite pairs, where quoted")
    server_time: AwareDatetime | None = Field(
        default=None, description="The broker's server clock at the poll, written as UTC as MT5 writes it")
    server_offset_minutes: int | None = Field(default=None, ge=-1440, le=1440,
                                              description="Server clock minus true UTC; None: unknown (v1)")
    credit: Money = 0.0
    positions_profit: Money | None = Field(
        default=None, description="Sum of the open positions' profit and swap read in the same poll")
    money_flows: tuple[MoneyFlow, ...] = Field(
        default=(), description="Balance and credit deals of the read's window: the new ones, and for about a "
        "minute the ones already reported (the guard applies each once, by ticket)")


class AccountSyncFailed(Payload):
    """A poll that could not read the terminal: the account's state is unknown, not flat."""

    event_type: ClassVar[str] = "AccountSyncFailed"

    user_id: UserId
    login: int = Field(ge=1)
    poll_seq: int = Field(ge=0)
    stage: str = Field(max_length=64, description="the call that failed, e.g. positions_get")
    error_code: int
    error_message: str = Field(max_length=1000)


class ObservedPosition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ticket: Ticket
    symbol: Symbol
    direction: Direction
    volume: Volume
    price_open: Price
    price_current: Price
    sl: Price | None = None
    tp: Price | None = None
    profit: Money
    profit_gbp: Money
    magic: int = 0
    comment: str = Field(default="", max_length=64)
    opened_at: AwareDatetime
    opened_server_at: AwareDatetime | None = Field(default=None, description="As the terminal wrote it")


class ObservedDeal(BaseModel):
    """A closing deal seen in history: how and why a position left the terminal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ticket: Ticket
    position_id: Ticket
    symbol: Symbol
    direction: Direction
    entry: DealEntry
    reason: DealReason
    volume: Volume
    price: Price
    profit: Money
    profit_gbp: Money
    time: AwareDatetime
    server_time: AwareDatetime | None = Field(default=None, description="As the terminal wrote it")


class PositionReport(Payload):
    """``positions_get()`` of one poll: the full list, plus closing deals since the last poll."""

    event_type: ClassVar[str] = "PositionReport"
    schema_version: ClassVar[int] = 2

    user_id: UserId
    login: int = Field(ge=1)
    poll_seq: int = Field(ge=0)
    positions: tuple[ObservedPosition, ...]
    closed_deals: tuple[ObservedDeal, ...] = ()


class TickReport(Payload):
    """The last quote of a symbol the account holds."""

    event_type: ClassVar[str] = "TickReport"
    schema_version: ClassVar[int] = 2
    rules: ClassVar[dict[str, str]] = {"not-crossed": "ask is not below bid"}

    symbol: Symbol
    bid: Price
    ask: Price
    point: float = Field(gt=0, allow_inf_nan=False)
    digits: int | None = Field(default=None, ge=0, le=10, description="Price digits; None: from point (v1)")
    quoted_at: AwareDatetime = Field(description="True UTC")
    server_quoted_at: AwareDatetime | None = Field(default=None, description="As the terminal wrote it")
    market_open: bool = Field(default=True, description="The symbol's trade mode allows trading (not its session)")

    @model_validator(mode="after")
    def _not_crossed(self) -> TickReport:
        if self.ask < self.bid:
            raise ValueError(f"crossed quote: ask {self.ask} is below bid {self.bid}")
        return self

    @property
    def price_digits(self) -> int:
        return self.digits if self.digits is not None else max(0, round(-math.log10(self.point)))


def _unchanged(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2: the times stay as they were written; what v1 did not carry is unknown."""
    return payload


#: Upcasters of this module's payloads, by (event type, from version); ``schemas.codec`` applies them.
UPCASTS = {("AccountReport", 1): _unchanged, ("PositionReport", 1): _unchanged, ("TickReport", 1): _unchanged}
