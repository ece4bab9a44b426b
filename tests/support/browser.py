"""Headless Chromium for the dashboard tests (Debian's `chromium`; tests skip when it is absent)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.servers import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO_ROOT / "test-artifacts"


def chromium(url: str, profile: Path, *extra: str) -> str:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1100",
        "--virtual-time-budget=8000",
        *extra,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def series(dom: str, kind: str) -> list[tuple[str, int, int]]:
    """(account, data-points, points in the path's d) of each chart of ``kind``."""
    found = []
    for card in re.finditer(r'<article class="account" data-user="([^"]+)">(.*?)</article>', dom, re.S):
        for path in re.finditer(
            rf'<path class="series {kind}" d="([^"]+)" data-points="(\d+)"', card.group(2)
        ):
            found.append((card.group(1), int(path.group(2)), len(re.findall(r"[ML]", path.group(1)))))
    return found
