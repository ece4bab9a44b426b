"""Value types shared by several payloads."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

Symbol = Annotated[str, Field(min_length=1, max_length=29, pattern=r"^[A-Za-z0-9._#\-]+$")]
UserId = Annotated[str, Field(min_length=1, max_length=64)]
Ticket = Annotated[int, Field(ge=1)]
Price = Annotated[float, Field(gt=0, lt=1e9, allow_inf_nan=False)]
Volume = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
Money = Annotated[float, Field(gt=-1e13, lt=1e13, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]


class Direction(StrEnum):
    BUY = "buy"
    SELL = "sell"


class DealReason(StrEnum):
    """MT5's DEAL_REASON_*, by name: who or what made the deal."""

    CLIENT = "client"
    MOBILE = "mobile"
    WEB = "web"
    EXPERT = "expert"
    SL = "sl"
    TP = "tp"
    STOP_OUT = "stop_out"
    ROLLOVER = "rollover"
    VMARGIN = "vmargin"
    SPLIT = "split"


class DealEntry(StrEnum):
    IN = "in"
    OUT = "out"
    INOUT = "inout"
    OUT_BY = "out_by"


class CloseReason(StrEnum):
    """Why a position was (or is to be) closed."""

    DRAWDOWN_GUARD = "drawdown_guard"
    DAILY_LOSS_GUARD = "daily_loss_guard"
    MARKET_GAP = "market_gap"
    SPREAD = "spread"
    STALE_FEED = "stale_feed"
    PLATFORM = "platform"
    SL = "sl"
    TP = "tp"
    STOP_OUT = "stop_out"
    MANUAL = "manual"
    ACCOUNT_LOCKED = "account_locked"
