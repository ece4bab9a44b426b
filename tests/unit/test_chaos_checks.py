"""The chaos harness's plan and judgements, without processes: seeded, and every count can fail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

from chaos.checks import (
    EXECUTOR_MAGIC,
    Deal,
    Record,
    attach_closes,
    closes_per_position,
    judge,
    liquidations,
    open_positions,
    server_offset,
    still_open_drives,
)
from chaos.schedule import FAULTS, plan_round
from producers.executor.parsing import close_comment
from producers.mt5 import constants as c
from schemas.decisions import ActionTaken, AlertType

T0 = 1_800_000_000.0


def test_a_round_does_every_fault_once_and_the_same_seed_gives_the_same_plan():
    plan = plan_round(4, 2, seconds=90, load_accounts=200)
    assert sorted(f.kind for f in plan.faults) == sorted(FAULTS)
    assert plan == plan_round(4, 2, seconds=90, load_accounts=200)
    assert plan != plan_round(5, 2, seconds=90, load_accounts=200)
    assert all(0 < f.at < 90 for f in plan.faults) and [f.at for f in plan.faults] == sorted(f.at for f in plan.faults)
    driven = [plan_round(4, n, seconds=90, load_accounts=200).liquidated for n in (1, 2, 3)]
    assert len({a for accounts in driven for a in accounts}) == 9, "each round drives accounts of its own"


def _warning(liquidation: uuid.UUID, *, at: float, deadline: float) -> Record:
    """A liquidation's warning: its event id is the liquidation's (``alert_id``), whatever report caused it."""
    payload = SimpleNamespace(alert_type=AlertType.DRAWDOWN_CRITICAL, action_taken=ActionTaken.WARNING_SENT,
                              user_id="u-x", positions_closed_count=0, status="open", alert_id=None,
                              details={"deadline": datetime.fromtimestamp(deadline, UTC).isoformat(),
                                       "close_grace_seconds": 10.0})
    return Record(SimpleNamespace(causation_id=uuid.uuid4(), event_id=liquidation, payload=payload), at)


COMMAND = uuid.UUID("6d1f0c2e-9a3b-4c5d-8e7f-0a1b2c3d4e5f")  # the liquidation's close command in ``_judged``


def _command(liquidation: uuid.UUID, *tickets: int, command: uuid.UUID | None = None, at: float = 0.0) -> Record:
    return Record(SimpleNamespace(causation_id=uuid.uuid4(), event_id=command or uuid.uuid4(),
                                  payload=SimpleNamespace(tickets=tickets, alert_id=liquidation)), at)


def _deal(position: int, entry: int, at: float, magic: int = EXECUTOR_MAGIC, volume: float = 1.0,
          comment: str = "") -> Deal:
    return Deal(1, position * 10 + entry, position, entry, magic, volume, at, comment)


def _judged(close_at: float | None, *, down=(), by: uuid.UUID = COMMAND, commanded_at: float = 0.0):
    trigger = uuid.uuid4()
    found = liquidations([_warning(trigger, at=T0, deadline=T0 + 9.5)],
                         [_command(trigger, 7, command=COMMAND, at=commanded_at)])
    deals = [_deal(7, c.DEAL_ENTRY_IN, T0 - 60, magic=0)]
    if close_at is not None:
        deals.append(_deal(7, c.DEAL_ENTRY_OUT, close_at, comment=close_comment(by)))
    attach_closes(found, deals, open_positions(deals))
    return judge(found, now=T0 + 100, bound=15, terminal_down=list(down))


def test_a_liquidation_closed_in_time_after_the_full_notice_passes():
    verdict = _judged(T0 + 10.5)
    assert (verdict.due, verdict.not_executed, verdict.short_notice, verdict.late) == (1, [], [], [])
    assert verdict.min_notice == 10.5


def test_each_broken_promise_is_counted():
    assert len(_judged(None).not_executed) == 1, "its position is still open"
    assert len(_judged(T0 + 9.8).short_notice) == 1, "closed 9.8 s after the warning went out"
    assert len(_judged(T0 + 40).late) == 1
    excused = _judged(T0 + 40, down=[(T0 + 5, T0 + 35)])
    assert (excused.late, len(excused.excused)) == ([], 1), "the terminal itself was down"


def test_a_deal_time_read_early_is_not_short_notice_when_its_command_came_after_the_grace():
    """The simulator's deal times may read up to a clock step early: a close cannot precede its command."""
    assert _judged(T0 + 9.996, commanded_at=T0 + 10.002).short_notice == []
    assert round(_judged(T0 + 9.996, commanded_at=T0 + 10.002).min_notice, 3) == 10.002
    assert len(_judged(T0 + 9.996, commanded_at=T0 + 9.99).short_notice) == 1, "its command came too early too"


def test_a_close_another_command_made_first_is_not_this_liquidations_to_judge():
    """The market guard closes at once on a gap, with no notice: that close is neither short notice
    nor late for the drawdown liquidation whose command then found the position gone."""
    gap = _judged(T0 + 8.2, by=uuid.UUID("2b7e1516-28ae-42d2-a6ab-f7158809cf4f"))
    assert (gap.due, gap.not_executed, gap.short_notice, gap.late, gap.min_notice) == (1, [], [], [], None)
    assert _judged(T0 + 8.2).short_notice, "its own close after 8.2 s is short notice"


def _superseded(liquidation: uuid.UUID, *, at: float) -> Record:
    """The guard's "superseded" state of a warning: its positions were closed by something else first."""
    payload = SimpleNamespace(alert_type=AlertType.DAILY_LOSS_CRITICAL, action_taken=ActionTaken.WARNING_SENT,
                              status="superseded", user_id="u-x", positions_closed_count=0, details={},
                              alert_id=liquidation)
    return Record(SimpleNamespace(causation_id=uuid.uuid4(), event_id=uuid.uuid4(), payload=payload), at)


def test_a_liquidation_whose_positions_something_else_closed_first_is_executed_not_missing():
    trigger = uuid.uuid4()
    warning = _warning(trigger, at=T0, deadline=T0 + 10)
    pending = judge(liquidations([warning], []), now=T0 + 100, bound=15, terminal_down=[])
    assert len(pending.not_executed) == 1, "no command and no word from the guard: not executed"
    found = liquidations([warning, _superseded(trigger, at=T0 + 10.2)], [])
    verdict = judge(found, now=T0 + 100, bound=15, terminal_down=[])
    assert (verdict.due, verdict.not_executed, verdict.late) == (1, [], [])
    with_deadline = _superseded(trigger, at=T0 + 10.2)
    with_deadline.envelope.payload.details["deadline"] = datetime.fromtimestamp(T0 + 10.3, UTC).isoformat()
    found = liquidations([warning, with_deadline], [])  # as the guard writes it: its deadline again
    assert judge(found, now=T0 + 100, bound=15, terminal_down=[]).not_executed == []
    other = liquidations([warning, _superseded(uuid.uuid4(), at=T0 + 10.2)], [])
    assert judge(other, now=T0 + 100, bound=15, terminal_down=[]).not_executed, "another warning's word"


def test_only_what_was_due_when_the_log_was_read_is_judged():
    trigger = uuid.uuid4()
    found = liquidations([_warning(trigger, at=T0, deadline=T0 + 10)], [])
    assert judge(found, now=T0 + 24, bound=15, terminal_down=[]).due == 0, "its command may be on its way"
    assert judge(found, now=T0 + 26, bound=15, terminal_down=[]).due == 1


def test_a_position_closed_twice_or_opened_by_a_close_is_counted():
    deals = [_deal(1, c.DEAL_ENTRY_IN, T0, magic=0), _deal(1, c.DEAL_ENTRY_OUT, T0 + 1, volume=0.5),
             _deal(1, c.DEAL_ENTRY_OUT, T0 + 2, volume=0.5), _deal(2, c.DEAL_ENTRY_IN, T0 + 3)]
    assert closes_per_position(deals) == (1, 1)
    assert closes_per_position(deals[:2]) == (0, 0)
    assert open_positions(deals) == {2}


def test_a_drive_position_nobody_closed_is_found():
    drive = Deal(1, 1, 5, c.DEAL_ENTRY_IN, 0, 2.0, T0, "chaos drive")
    closed = Deal(1, 2, 5, c.DEAL_ENTRY_OUT, EXECUTOR_MAGIC, 2.0, T0 + 20)
    other = Deal(1, 3, 6, c.DEAL_ENTRY_IN, 0, 1.0, T0, "by hand")
    assert still_open_drives([drive, other], "chaos drive") == [drive]
    assert still_open_drives([drive, closed, other], "chaos drive") == []


def test_deal_times_are_brought_back_to_utc_from_the_server_clock():
    ahead = SimpleNamespace(now=lambda: T0, server_now=lambda: T0 + 7200.04)
    assert server_offset(ahead) == 7200
    assert server_offset(SimpleNamespace(now=lambda: T0)) == 0, "a simulator without a server clock"


def test_a_warning_published_again_from_another_report_is_the_same_liquidation_judged_by_its_first_notice():
    """A restart that lost the trigger's write derives it again from the next report: the same liquidation
    (its id), whose commands are its own; the owner was told the first deadline, and is judged by it."""
    liquidation = uuid.uuid4()
    first, again = _warning(liquidation, at=T0, deadline=T0 + 10), _warning(liquidation, at=T0 + 1, deadline=T0 + 11)
    found = liquidations([first, again], [_command(liquidation, 7, command=COMMAND)])
    assert list(found) == [str(liquidation)] and found[str(liquidation)].deadline == T0 + 10
    deals = [_deal(7, c.DEAL_ENTRY_IN, T0 - 60, magic=0), _deal(7, c.DEAL_ENTRY_OUT, T0 + 11, comment=close_comment(COMMAND))]
    attach_closes(found, deals, open_positions(deals))
    verdict = judge(found, now=T0 + 100, bound=15, terminal_down=[])
    assert (verdict.due, verdict.not_executed, verdict.short_notice, verdict.late) == (1, [], [], [])
    assert judge(liquidations([first, _warning(uuid.uuid4(), at=T0 + 1, deadline=T0 + 11)],
                              [_command(liquidation, 7, command=COMMAND)]), now=T0 + 100, bound=15,
                 terminal_down=[]).due == 2, "a warning with a new id is another liquidation, to be executed too"
