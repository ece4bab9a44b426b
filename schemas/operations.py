"""Messages for the operators of reconguard itself (not for traders): what needs a human."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from schemas.envelope import Payload


class OperatorAlertRaised(Payload):
    """Something the guard survived but an operator must look at (a crash loop, a late warning).

    The envelope's ``account_id`` is the account concerned, or the service's name when no account is."""

    event_type: ClassVar[str] = "OperatorAlertRaised"

    kind: Literal["crash_loop", "service_recovered", "warning_delayed"]
    severity: Literal["warning", "critical"]
    service: str = Field(max_length=64, description="The service that raised it or is concerned")
    message: str = Field(max_length=2000)
    details: dict[str, Any] = Field(default_factory=dict)
