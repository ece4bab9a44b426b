"""What the signal platform approved: the expectation reconciliation checks the terminal against."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from schemas.common import Direction, Price, Symbol, Ticket, UserId, Volume
from schemas.envelope import Payload

PlatformId = str


class TradeApproved(Payload):
    """The platform approved a signal and placed (or will place) it on the user's account."""

    event_type: ClassVar[str] = "TradeApproved"
    rules: ClassVar[dict[str, str]] = {
        "stops-around-entry": "buy: stop_loss < entry_price < take_profit; sell: take_profit < entry_price < stop_loss "
                              "(each stop only when given)"}

    signal_id: str = Field(min_length=1, max_length=64)
    approval_id: str = Field(min_length=1, max_length=64)
    user_id: UserId
    symbol: Symbol
    direction: Direction
    volume: Volume
    entry_price: Price
    stop_loss: Price | None = None
    take_profit: Price | None = None
    mt5_position_id: Ticket | None = Field(default=None, description="The ticket, once the platform knows it")

    @model_validator(mode="after")
    def _stops_on_the_right_side(self) -> "TradeApproved":
        below, above = (self.stop_loss, self.take_profit) if self.direction is Direction.BUY else (
            self.take_profit, self.stop_loss)
        if below is not None and below >= self.entry_price:
            raise ValueError("the stop below the entry must be lower than the entry price")
        if above is not None and above <= self.entry_price:
            raise ValueError("the stop above the entry must be higher than the entry price")
        return self


class TradeClosedByPlatform(Payload):
    """The platform itself closed an approved trade: its disappearance is expected."""

    event_type: ClassVar[str] = "TradeClosedByPlatform"

    signal_id: str = Field(min_length=1, max_length=64)
    approval_id: str = Field(min_length=1, max_length=64)
    user_id: UserId
    mt5_position_id: Ticket | None = None
    volume: Volume | None = Field(default=None, description="Closed volume; None means all of it")
