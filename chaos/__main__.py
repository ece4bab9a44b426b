"""`python -m chaos [--seed N] [--rounds N] [--accounts N] [--round-seconds S]` (`make chaos`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chaos.run import Options, main


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--rounds", type=int, default=Options.rounds)
    parser.add_argument("--accounts", type=int, default=Options.accounts, help="load accounts beside the demo's 4")
    parser.add_argument("--round-seconds", type=float, default=Options.round_seconds)
    parser.add_argument("--bound", type=float, default=Options.bound,
                        help="seconds a liquidation's close may come after its deadline")
    parser.add_argument("--directory", type=Path, default=None, help="default: .reconguard/chaos-SEED")
    args = parser.parse_args(argv)
    return Options(seed=args.seed, rounds=args.rounds, accounts=args.accounts, round_seconds=args.round_seconds,
                   bound=args.bound, directory=args.directory)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    sys.exit(main(parse(sys.argv[1:])))
