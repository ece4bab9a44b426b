"""The poller's reads through the mt5linux gateway against the simulator's RPyC server, in this process.

A read that knows what the last one needed asks for it in one round trip (``send_many``); what it
returns must be what the one-call-at-a-time read returns, and its failures the same stages and codes.
The market is not moved here (the server runs without its clock), so two reads see the same quotes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from infra.embedded import free_port
from infra.settings import Settings
from producers.accounts import AccountRef
from producers.demo.accounts import DEMO_PASSWORD
from producers.mt5 import constants as c
from producers.mt5.gateway import Mt5LinuxGateway, SimulatorGateway
from producers.mt5.simulator import SimulatedBroker
from producers.mt5.simulator.journal import World
from producers.mt5.simulator.server import SimulatorServer, load_login, new_world
from producers.poller.client import NOT_CONNECTED, AccountRead, ReadFailed, SymbolCache, read_account
from producers.poller.loop import Batch, Poller, PollerConfig


@dataclass
class Served:
    server: SimulatorServer
    gateways: dict[int, Mt5LinuxGateway]

    @property
    def broker(self):
        return self.server.world.broker


@pytest.fixture
def served() -> Iterator[Served]:
    world = new_world(seed=7, load_accounts=3)
    server = SimulatorServer(world, None, base_port=free_port_block())
    stop = threading.Event()
    thread = threading.Thread(target=server._serve_connections, args=(stop,), daemon=True)  # no clock: a still market
    thread.start()
    gateways = {}
    try:
        for login, port in server.ports.items():
            gateway = Mt5LinuxGateway("127.0.0.1", port)
            assert gateway.initialize(login=login, password=DEMO_PASSWORD)
            gateways[login] = gateway
        yield Served(server, gateways)
    finally:
        for gateway in gateways.values():
            gateway.close()
        stop.set()
        thread.join(timeout=5)
        for listener in server.listeners:
            listener.socket.close()


def free_port_block() -> int:
    from chaos.topology import free_port_block as block

    return block(10)


class Counted:
    """The gateway with its round trips to the bridge counted (every call and every batch is one), and
    each request sent and answer taken written to ``events`` (shared by several gateways)."""

    def __init__(self, gateway: Mt5LinuxGateway, events: list[str] | None = None) -> None:
        self.gateway, self.round_trips = gateway, 0
        self.events = [] if events is None else events
        bridge, send, receive = gateway.module, gateway.module._send, gateway.module._receive

        def counted(*args, **kwargs):
            self.round_trips += 1
            self.events.append("sent")
            return send(*args, **kwargs)

        def received(*args, **kwargs):
            self.events.append("received")
            return receive(*args, **kwargs)

        bridge._send, bridge._receive = counted, received


def _read(gateway: Mt5LinuxGateway, login: int, cache: SymbolCache, **options) -> AccountRead:
    return read_account(gateway, login=login, cache=cache, previous=options.pop("previous", {}),
                        server_now=int(options.pop("server_now", 2_000_000_000)), **options)


def _same(a: AccountRead, b: AccountRead) -> None:
    """The same read (``digits`` holds every symbol its cache has seen: compared for the quoted ones)."""
    assert (a.info, a.positions, a.ticks, a.points, a.gbp_rate, a.deals, a.flows) == \
        (b.info, b.positions, b.ticks, b.points, b.gbp_rate, b.deals, b.flows)
    assert {s: a.digits[s] for s in a.ticks} == {s: b.digits[s] for s in b.ticks}


def test_a_warm_read_is_one_round_trip_and_reads_what_single_calls_read(served: Served) -> None:
    login = load_login(0)
    served.broker.manual_open(login, "EURUSD", c.ORDER_TYPE_BUY, 0.5)
    counted = Counted(served.gateways[login])
    cache = SymbolCache()
    first = _read(counted.gateway, login, cache)
    cold = counted.round_trips
    single = _read(counted.gateway, login, SymbolCache())  # a cold cache reads call by call again
    counted.round_trips = 0
    batched = _read(counted.gateway, login, cache)
    assert counted.round_trips == 1, f"{counted.round_trips} round trips for a read that changed nothing"
    assert cold > 3  # the first read went call by call (terminal, account, positions, quotes, flows...)
    _same(first, batched)
    _same(single, batched)
    assert batched.positions and batched.positions[0].symbol == "EURUSD"


def test_a_new_symbol_and_a_vanished_ticket_are_read_after_the_batch(served: Served) -> None:
    login = load_login(1)
    cache = SymbolCache()
    first = _read(served.gateways[login], login, cache)
    assert first.positions == ()
    ticket = served.broker.manual_open(login, "USDJPY", c.ORDER_TYPE_SELL, 0.2)
    opened = _read(served.gateways[login], login, cache, previous={})
    assert [p.symbol for p in opened.positions] == ["USDJPY"] and "USDJPY" in opened.ticks
    assert opened.points["USDJPY"] > 0
    served.broker.manual_close(login, ticket)
    closed = _read(served.gateways[login], login, cache, previous={ticket: 0.2})
    assert closed.positions == ()
    assert [d.position_id for d in closed.deals[ticket]] == [ticket, ticket]  # its opening and closing deal
    _same(closed, _read(served.gateways[login], login, SymbolCache(), previous={ticket: 0.2}))


def test_failures_name_the_same_stage_and_code_batched_or_not(served: Served) -> None:
    login = load_login(2)
    cache = SymbolCache()
    _read(served.gateways[login], login, cache)
    served.broker.disconnect(login)
    for each in (cache, SymbolCache()):
        with pytest.raises(ReadFailed) as failed:
            _read(served.gateways[login], login, each)
        assert (failed.value.stage, failed.value.code) == ("terminal_info", NOT_CONNECTED)
    served.broker.reconnect(login)
    for each in (cache, SymbolCache()):
        with pytest.raises(ReadFailed) as failed:
            _read(served.gateways[login], login + 1, each)
        assert failed.value.stage == "account_info" and "not" in failed.value.message


def test_a_broken_bridge_fails_the_batch_as_a_lost_ipc_connection(served: Served) -> None:
    login = load_login(0)
    cache = SymbolCache()
    _read(served.gateways[login], login, cache)
    answers = served.gateways[login].send_many([("terminal_info", {}), ("account_info", {})])()
    assert [value is not None for value, _ in answers] == [True, True]
    gateway = Mt5LinuxGateway("127.0.0.1", free_port(), connect=False)  # nobody listens there
    answers = gateway.send_many([("terminal_info", {}), ("account_info", {})])()
    assert [value for value, _ in answers] == [None, None]
    assert {error[0] for _, error in answers} == {c.RES_E_INTERNAL_FAIL_CONNECT}


def test_accounts_of_one_server_share_a_round_s_quotes(served: Served) -> None:
    quotes: dict = {}
    logins = [load_login(0), load_login(1)]
    counted = [Counted(served.gateways[login]) for login in logins]
    caches = [SymbolCache(), SymbolCache()]
    for login, cache, each in zip(logins, caches, counted, strict=True):
        _read(each.gateway, login, cache)  # warm: the next reads are batched
    reads = [_read(each.gateway, login, cache, quotes=quotes)
             for login, cache, each in zip(logins, caches, counted, strict=True)]
    server = reads[0].info.server
    assert set(quotes) == {(server, s) for s in reads[0].ticks}
    assert reads[1].ticks[next(iter(reads[1].ticks))] is quotes[server, next(iter(reads[1].ticks))]


@pytest.mark.parametrize("parts", [1, 1000], ids=["one part a round", "an account a part"])
async def test_a_poller_over_the_bridge_reports_what_a_poller_in_process_reports(
        served: Served, settings: Settings, producer: AIOKafkaProducer, parts: int) -> None:
    """A round sends every warm account's request before it takes any answer (one round trip each, from
    one thread); its reports are those of the same world polled in process, through a new symbol, a
    close and a terminal that lost its server. Also when the round is concluded and published an
    account at a time, as each one's answers come in."""
    twin = new_world(seed=7, load_accounts=3, start_time=served.broker.now())
    refs = {login: AccountRef(f"u-{login}", login, served.broker.server, "GBP") for login in served.gateways}
    events: list[str] = []
    counted = {login: Counted(gateway, events) for login, gateway in served.gateways.items()}
    bridged = Poller(accounts=[(refs[login], each.gateway) for login, each in counted.items()], producer=producer,
                     prefix=settings.topic_prefix, first_seq=0, config=PollerConfig(threads=4, reattach_every=0.0, parts=parts))
    local = Poller(accounts=[(refs[login], _in_process(twin, login)) for login in served.gateways], producer=producer,
                   prefix=settings.topic_prefix, first_seq=0, config=PollerConfig(reattach_every=0.0))
    trader, cut_off = load_login(0), load_login(1)
    steps: dict[int, Callable[[SimulatedBroker], Any]] = {
        1: lambda broker: broker.manual_open(trader, "USDJPY", c.ORDER_TYPE_BUY, 0.3),
        3: lambda broker: broker.manual_close(trader, min(broker.account(trader).positions)),
        4: lambda broker: broker.disconnect(cut_off),
        5: lambda broker: broker.reconnect(cut_off)}
    try:
        for round_ in range(7):
            for broker in (served.broker, twin.broker):
                steps.get(round_, lambda _: None)(broker)
                broker.advance(1.0)
            for each in counted.values():
                each.round_trips = 0
            events.clear()
            over_the_bridge, in_process = await bridged.poll(), await local.poll()
            assert _reported(over_the_bridge) == _reported(in_process), f"round {round_}"
            if round_ in (2, 6):  # nothing new since the round before: one request per account
                assert {login: each.round_trips for login, each in counted.items()} == dict.fromkeys(counted, 1)
                assert events == ["sent"] * len(counted) + ["received"] * len(counted)
    finally:
        bridged.close()
    assert [e.event_type for e in over_the_bridge.accounts] == ["AccountReport"] * len(counted)


def _in_process(world: World, login: int) -> SimulatorGateway:
    gateway = SimulatorGateway(world.terminal(login, DEMO_PASSWORD))
    assert gateway.initialize(login=login, password=DEMO_PASSWORD)
    return gateway


def _reported(batch: Batch) -> list[Any]:
    """A round's payloads, less the server clock at the poll (taken from the wall clock)."""
    return [e.payload.model_dump(mode="json", exclude={"server_time"})
            for e in batch.accounts + batch.positions + batch.ticks]
