"""Print what the bystander saw during each attack, after the run."""

from __future__ import annotations

from typing import Any

from tests.hostile.bystander import REPORTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORTS:
        return
    terminalreporter.section("bystander during each attack (pings every 100 ms)")
    for attack, summary in REPORTS:
        terminalreporter.write_line(f"{attack}: {summary}")
