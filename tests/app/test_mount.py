"""Switchboard mounted in an app that already exists: the README's FastAPI ``web.py``, as
written, and a Starlette app with a lifespan of its own. Each runs under its own uvicorn,
serves its own HTTP route, and the real phoenix.js client talks to the chat socket."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator

import httpx
import pytest

from tests.app.examples import write_examples
from tests.support.phoenix_agent import Agent
from tests.support.processes import VENV_BIN, free_port

STARLETTE_APP = textwrap.dedent(
    """
    import contextlib

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from chat import ChatSocket
    from switchboard import Endpoint

    endpoint = Endpoint(ChatSocket)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.greeting = "hello from the host app"
        async with endpoint.lifespan(app):
            yield

    async def hello(request):
        endpoint.broadcast("lobby:main", "said", {"name": "host", "text": "someone said hello"})
        return JSONResponse({"hello": request.app.state.greeting})

    app = Starlette(routes=[Route("/hello", hello), *endpoint.routes], lifespan=lifespan)
    """
)


class HostApp:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module", params=["fastapi", "starlette"])
def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostApp]:
    folder = write_examples(tmp_path_factory.mktemp("host-app"), "chat.py", "web.py")
    if request.param == "starlette":
        (folder / "web.py").write_text(STARLETTE_APP)
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_PROFILE": "test",
        "SWITCHBOARD_SECRET": "mount-test-secret-" + os.urandom(8).hex(),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [str(VENV_BIN / "uvicorn"), "web:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    app = HostApp(process, port)
    try:
        _wait_until_serving(app)
        yield app
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        assert process.stderr is not None
        process.stderr.close()


def _wait_until_serving(app: HostApp) -> None:
    """The host app's own route answers (its lifespan, and so the node, has started)."""
    with httpx.Client() as client:
        for _ in range(200):
            if app.process.poll() is not None:
                assert app.process.stderr is not None
                pytest.fail(f"uvicorn exited: {app.process.stderr.read()[-3000:]}")
            try:
                if client.get(f"{app.url}/hello", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                app.process.wait(0.05)  # bounded poll: returns early if uvicorn exits
            except subprocess.TimeoutExpired:
                pass
    pytest.fail("the host app did not start serving")


def test_the_host_app_serves_its_own_route_and_the_chat_socket(host: HostApp) -> None:
    agent = Agent(f"ws://127.0.0.1:{host.port}/socket", lambda user: "", reconnect=False)
    try:
        agent.connect_with("alice", {"name": "alice"})
        agent.connect_with("bob", {"name": "bob"})
        for id in ("alice", "bob"):
            joined = agent.join(id, "lobby:main", payload={"pin": "1234"}, events=("said",))
            assert joined is not None and joined["response"] == {"you": id}
        assert agent.push("bob", "lobby:main", "say", {"text": "mounted"})["status"] == "ok"
        agent.wait_until(
            "alice hears bob",
            lambda: (
                {"name": "bob", "text": "mounted"} in agent.messages("alice", "lobby:main", "said")
            ),
        )

        response = httpx.get(f"{host.url}/hello")
        assert response.status_code == 200
        if response.json() == {"hello": "hello from the host app"}:  # the Starlette app
            # Its own lifespan ran around the node's, and its code broadcasts to the channel.
            said = {"name": "host", "text": "someone said hello"}
            agent.wait_until(
                "alice hears the host",
                lambda: said in agent.messages("alice", "lobby:main", "said"),
            )
        else:
            assert response.json() == {"hello": "world"}
    finally:
        agent.close()


def test_stopping_the_host_app_closes_its_sockets_with_1012(host: HostApp) -> None:
    agent = Agent(f"ws://127.0.0.1:{host.port}/socket", lambda user: "", reconnect=False)
    try:
        agent.connect_with("carol", {"name": "carol"})
        agent.join("carol", "lobby:main", payload={"pin": "1234"})
        host.process.send_signal(signal.SIGTERM)
        closed = agent.wait_event(
            "carol closed", lambda e: e["ev"] == "close" and e["id"] == "carol"
        )
        assert closed["code"] == 1012
        assert host.process.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    finally:
        agent.close()
