"""Configuration: profiles, what prod refuses, malformed values, and the ``switchboard`` CLI.

Unit tests: ``Settings.from_env`` is given an explicit environment; the CLI runs as a
subprocess with every ``SWITCHBOARD_*`` variable removed, and never starts a node that stays up.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from switchboard.server.auth import verify_token
from switchboard.server.config import DEV_SECRET, ConfigError, Settings
from tests.support.processes import ROOT, VENV_BIN

GOOD_PROD_SECRET = "p" * 24 + os.urandom(8).hex()  # 40 characters, not the dev secret
PROD = {
    "SWITCHBOARD_PROFILE": "prod",
    "SWITCHBOARD_SECRET": GOOD_PROD_SECRET,
    "SWITCHBOARD_ALLOWED_ORIGINS": "https://app.example",
}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``switchboard ARGS`` with no SWITCHBOARD_* variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run(
        [str(VENV_BIN / "switchboard"), *args],
        env={**clean, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )


# -- profiles ------------------------------------------------------------------------------------


def test_the_dev_profile_works_with_no_environment_and_uses_the_dev_secret() -> None:
    settings = Settings.from_env({})
    assert settings.profile == "dev"
    assert settings.dev
    assert settings.secret == DEV_SECRET
    assert settings.allowed_origins == ()


def test_switchboard_token_in_dev_prints_a_token_that_a_dev_node_accepts() -> None:
    result = _cli("token", "--user", "alice")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token and "\n" not in token, result.stdout
    # A dev `serve` verifies with the secret its settings give it: the dev secret.
    assert Settings.from_env({}).secret == DEV_SECRET
    identity = verify_token(DEV_SECRET, token)
    assert identity.user_id == "alice"
    assert not identity.admin


def test_the_test_profile_invents_a_secret_per_start_when_none_is_given() -> None:
    first = Settings.from_env({"SWITCHBOARD_PROFILE": "test"})
    second = Settings.from_env({"SWITCHBOARD_PROFILE": "test"})
    assert first.secret and first.secret != DEV_SECRET
    assert first.secret != second.secret


def test_a_complete_prod_configuration_is_accepted() -> None:
    settings = Settings.from_env(PROD)
    assert settings.profile == "prod"
    assert settings.secret == GOOD_PROD_SECRET
    assert settings.allowed_origins == ("https://app.example",)


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        pytest.param({"SWITCHBOARD_SECRET": None}, "SWITCHBOARD_SECRET", id="no secret"),
        pytest.param({"SWITCHBOARD_SECRET": ""}, "SWITCHBOARD_SECRET", id="empty secret"),
        pytest.param({"SWITCHBOARD_SECRET": DEV_SECRET}, "SWITCHBOARD_SECRET", id="dev secret"),
        pytest.param({"SWITCHBOARD_SECRET": "s" * 31}, "SWITCHBOARD_SECRET", id="short secret"),
        pytest.param(
            {"SWITCHBOARD_ALLOWED_ORIGINS": None}, "SWITCHBOARD_ALLOWED_ORIGINS", id="no origins"
        ),
        pytest.param(
            {"SWITCHBOARD_ALLOWED_ORIGINS": " , "},
            "SWITCHBOARD_ALLOWED_ORIGINS",
            id="blank origins",
        ),
        pytest.param(
            {"SWITCHBOARD_ALLOWED_ORIGINS": "https://app.example,*"},
            "SWITCHBOARD_ALLOWED_ORIGINS",
            id="any origin",
        ),
        pytest.param({"SWITCHBOARD_SECRET": " " * 40}, "SWITCHBOARD_SECRET", id="blank secret"),
        pytest.param(
            {"SWITCHBOARD_SECRET": " " * 20 + "x" * 20},
            "SWITCHBOARD_SECRET",
            id="secret padded with spaces",
        ),
        pytest.param(
            {"SWITCHBOARD_TRUSTED_PROXIES": "10.0.0.1,0.0.0.0/0"},
            "SWITCHBOARD_TRUSTED_PROXIES",
            id="every IPv4 address a proxy",
        ),
        pytest.param(
            {"SWITCHBOARD_TRUSTED_PROXIES": "::/0"},
            "SWITCHBOARD_TRUSTED_PROXIES",
            id="every IPv6 address a proxy",
        ),
    ],
)
def test_the_prod_profile_refuses_to_start_and_names_the_variable(
    change: dict[str, str | None], variable: str
) -> None:
    environ = {**PROD, **change}
    environ = {k: v for k, v in environ.items() if v is not None}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(environ)
    assert variable in str(refused.value)


@pytest.mark.parametrize("profile", ["dev", "test"])
def test_a_secret_of_only_whitespace_is_refused_in_every_profile(profile: str) -> None:
    with pytest.raises(ConfigError, match="SWITCHBOARD_SECRET"):
        Settings.from_env({"SWITCHBOARD_PROFILE": profile, "SWITCHBOARD_SECRET": "   "})


def test_the_prod_profile_from_the_command_line_flag_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="SWITCHBOARD_SECRET"):
        Settings.from_env({}, profile="prod")


def test_serve_in_prod_without_a_secret_exits_non_zero_with_a_clear_message() -> None:
    result = _cli("serve", "--profile", "prod", "--port", "0")
    assert result.returncode != 0
    assert "SWITCHBOARD_SECRET" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, f"one line, not a dump: {result.stderr!r}"


# -- malformed values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SWITCHBOARD_PORT", "abc"),
        ("SWITCHBOARD_PUSH_RATE", "x"),
        ("SWITCHBOARD_PUSH_RATE", "5"),
        ("SWITCHBOARD_PUSH_RATE", "0,1"),
        ("SWITCHBOARD_HTTP_RATE", "10,-1"),
        ("SWITCHBOARD_IDLE_TIMEOUT", "soon"),
        ("SWITCHBOARD_LIMITS", "maybe"),
        ("SWITCHBOARD_PROFILE", "staging"),
        ("SWITCHBOARD_MAX_FRAME_SIZE", "100"),
    ],
)
def test_a_malformed_value_gives_a_config_error_naming_the_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    assert variable in str(refused.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SWITCHBOARD_LOG_LEVEL", "loud"),
        ("SWITCHBOARD_PORT", "70000"),
        ("SWITCHBOARD_TRUSTED_PROXIES", "not-an-address"),
        ("SWITCHBOARD_PUBSUB_URL", "ftp://example.com"),
        ("SWITCHBOARD_HISTORY_SIZE", "-1"),
        ("SWITCHBOARD_HISTORY_TTL", "0"),
        ("SWITCHBOARD_METRICS_ADDRESS", "9100"),
        ("SWITCHBOARD_METRICS_ADDRESS", "127.0.0.1:port"),
        ("SWITCHBOARD_CACHE_MAX_VALUE", "0"),
        ("SWITCHBOARD_CACHE_MAX_BYTES", "1000"),  # under the largest value
        ("SWITCHBOARD_GC_THRESHOLD", "-1"),
    ],
)
def test_a_value_that_parses_but_cannot_work_gives_a_config_error_naming_the_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    assert variable in str(refused.value)


def test_history_keeps_100_broadcasts_for_300_s_by_default_and_size_0_turns_it_off() -> None:
    limits = Settings.from_env({}).history_limits()
    assert limits is not None and (limits.size, limits.ttl) == (100, 300.0)
    # A recovery replays at most half the outbox, so the replay always fits in it.
    assert limits.max_bytes == Settings.from_env({}).outbox_limit // 2
    assert Settings.from_env({"SWITCHBOARD_HISTORY_SIZE": "0"}).history_limits() is None


def test_serve_with_a_malformed_value_exits_2_with_a_message_and_no_traceback() -> None:
    result = _cli("serve", "--port", "0", env={"SWITCHBOARD_PUSH_RATE": "x"})
    assert result.returncode == 2, result.stderr
    assert "SWITCHBOARD_PUSH_RATE" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_serve_with_an_unknown_log_level_exits_2_with_a_message_and_no_traceback() -> None:
    result = _cli("serve", "--port", "0", env={"SWITCHBOARD_LOG_LEVEL": "loud"})
    assert result.returncode == 2, result.stderr
    assert "SWITCHBOARD_LOG_LEVEL" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# -- secrets stay out of sight -------------------------------------------------------------------


def test_no_secret_appears_in_the_repr_of_the_settings() -> None:
    secret, api_key, admin = "S" * 40, "api-key-" + "K" * 30, "admin-token-" + "A" * 30
    settings = Settings.from_env(
        {
            **PROD,
            "SWITCHBOARD_SECRET": secret,
            "SWITCHBOARD_API_KEY": api_key,
            "SWITCHBOARD_ADMIN_TOKEN": admin,
        }
    )
    assert settings.secret == secret and settings.api_key == api_key
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        for hidden in (secret, api_key, admin):
            assert hidden not in text
    assert DEV_SECRET not in repr(Settings.from_env({}))


# -- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ((), ["serve", "token", "cluster"]),
        (("serve",), ["--profile", "--port", "--secret", "--allowed-origins"]),
        (("token",), ["--user", "--ttl"]),
        (("cluster",), ["--nodes"]),
    ],
)
def test_help_works_for_the_command_and_its_subcommands(
    args: tuple[str, ...], mentions: list[str]
) -> None:
    result = _cli(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: switchboard"), result.stdout
    for word in mentions:
        assert word in result.stdout
    assert result.stderr == ""
