"""``switchboard serve module:Socket``: what a typo or a wrong object gets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.app.examples import write_examples
from tests.support.processes import VENV_BIN


@pytest.fixture(scope="module")
def app_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_examples(tmp_path_factory.mktemp("serve-errors"), "chat.py")
    (folder / "broken.py").write_text("import a_module_nobody_has\n")
    return folder


def _serve(folder: Path, spec: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "switchboard"), "serve", spec, "--port", "0"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "SWITCHBOARD_PROFILE": "test"},
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch:Socket", "switchboard: no module named 'nosuch' in {folder}"),
        ("chat:NoSuchSocket", "switchboard: module 'chat' has no attribute 'NoSuchSocket'"),
        (
            "chat:LobbyChannel",
            "switchboard: chat:LobbyChannel is <class 'chat.LobbyChannel'>, "
            "not a subclass of switchboard.Socket",
        ),
        ("chat", "switchboard: expected module:SocketClass (like chat:ChatSocket), got 'chat'"),
    ],
)
def test_a_socket_that_cannot_be_served_is_a_one_line_error(
    app_folder: Path, spec: str, message: str
) -> None:
    result = _serve(app_folder, spec)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message.format(folder=app_folder)]


def test_a_missing_import_inside_the_module_is_shown_with_its_own_name(app_folder: Path) -> None:
    result = _serve(app_folder, "broken:Socket")
    assert result.returncode != 0
    assert "No module named 'a_module_nobody_has'" in result.stderr
