"""`reconguard run` must set prometheus's multiprocess directory before any metric exists."""

from __future__ import annotations

import subprocess
import sys


def test_the_command_line_imports_no_metric_before_run_starts():
    probe = "import sys, reconguard.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
