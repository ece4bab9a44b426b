"""Observations the poller publishes: what the terminal said, never a conclusion."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.common import DealEntry, DealReason, Direction, Money, Price, Symbol, Ticket, UserId, Volume
from schemas.envelope import Payload


class AccountReport(Payload):
    """``account_info()`` of one poll, with the rate that turns account money into GBP."""

    event_type: ClassVar[str] = "AccountReport"

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
    server_time: AwareDatetime | None = Field(default=None, description="Broker server clock, for day resets")


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


class PositionReport(Payload):
    """``positions_get()`` of one poll: the full list, plus closing deals since the last poll."""

    event_type: ClassVar[str] = "PositionReport"

    user_id: UserId
    login: int = Field(ge=1)
    poll_seq: int = Field(ge=0)
    positions: tuple[ObservedPosition, ...]
    closed_deals: tuple[ObservedDeal, ...] = ()


class TickReport(Payload):
    """The last quote of a symbol the account holds."""

    event_type: ClassVar[str] = "TickReport"
    rules: ClassVar[dict[str, str]] = {"not-crossed": "ask is not below bid"}

    symbol: Symbol
    bid: Price
    ask: Price
    point: float = Field(gt=0, allow_inf_nan=False)
    quoted_at: AwareDatetime
    market_open: bool = True

    @model_validator(mode="after")
    def _not_crossed(self) -> TickReport:
        if self.ask < self.bid:
            raise ValueError(f"crossed quote: ask {self.ask} is below bid {self.bid}")
        return self
