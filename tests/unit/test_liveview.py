"""The live terminal view shows each account's numbers and flags what needs attention."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console

from reconguard.liveview import AccountLine, AlertLine, render


def _text(accounts, alerts) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(render(accounts, alerts))
    return console.export_text()


def test_accounts_and_alerts_are_listed_with_their_numbers():
    text = _text(
        [AccountLine("u-alice", Decimal("9120.5"), Decimal("10000"), Decimal("8.795"), Decimal("10"), 3, 2, None),
         AccountLine("u-bob", None, None, None, Decimal("10"), None, 0, "IPC timeout")],
        [AlertLine("u-alice", "13:02:11", "drawdown_critical", "warning_sent", Decimal("10.4"))])
    assert "u-alice" in text and "£9,120.50" in text and "8.80%" in text and "10.0%" in text
    assert "IPC timeout" in text and "—" in text
    assert "drawdown_critical" in text and "warning_sent" in text and "10.40%" in text


def test_an_account_without_snapshots_shows_dashes_not_zeros():
    text = _text([AccountLine("u-new", None, None, None, Decimal("10"), None, 0, None)], [])
    row = next(line for line in text.splitlines() if "u-new" in line)
    assert "£0" not in row and "—" in row


def test_supervised_services_show_their_restarts_and_a_crash_loop():
    from infra.service import ServiceStatus

    console = Console(width=160, record=True, color_system=None)
    console.print(render([], [], [ServiceStatus("worker", "running", restarts=2, last_error="exited with code -9"),
                                  ServiceStatus("telegram", "restarting", restarts=7, crash_loop=True),
                                  ServiceStatus("api", "running")], "ConnectionRefusedError"))
    text = console.export_text()
    worker = next(line for line in text.splitlines() if "worker" in line)
    assert "2" in worker and "exited with code -9" in worker
    assert "crash loop" in next(line for line in text.splitlines() if "telegram" in line)
    assert "database unavailable: ConnectionRefusedError" in text


def test_a_locked_account_says_so_and_an_open_one_too():
    text = _text([AccountLine("u-dave", Decimal("8800"), Decimal("10000"), Decimal("12"), Decimal("10"), 0, 0, None,
                              locked="drawdown"),
                  AccountLine("u-alice", Decimal("10000"), Decimal("10000"), Decimal("0"), Decimal("10"), 1, 0, None)],
                 [])
    dave = next(line for line in text.splitlines() if "u-dave" in line)
    alice = next(line for line in text.splitlines() if "u-alice" in line)
    assert "LOCKED (drawdown)" in dave and "LOCKED" not in alice and "open" in alice
