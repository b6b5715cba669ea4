"""The README stays true: its configuration table lists every setting, and its commands exist."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from switchboard.server.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    missing = [
        f.metadata["env"] for f in fields(Settings) if f"`{f.metadata['env']}`" not in README
    ]
    assert not missing, f"README lacks {missing}"


def test_the_readme_names_the_two_commands_that_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in README and "scripts/test.sh" in ci
    assert "bash scripts/setup.sh && .venv/bin/switchboard serve" in README
