"""``python -m streams``: the Faust worker, configured from the environment."""

import sys

from infra.settings import load
from streams.worker import run_worker

if __name__ == "__main__":
    sys.argv = sys.argv[:1] + ["worker"]  # mode's Worker reads the command line
    run_worker(load())
