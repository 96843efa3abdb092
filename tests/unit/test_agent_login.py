"""The ssh login environment a template records, and how `vm run` rebuilds it for a command run by the agent."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from banger_core.common.agent_client import AgentClient
from banger_core.common.agent_login import (
    LoginEnvironment,
    client_sent,
    command_environment,
    parse_record,
)
from banger_core.common.errors import AgentError
from banger_hookspecs import guest_agent as wire
from tests.unit.test_agent_client import TOKEN, PairTransport, serve_agent

pytestmark = pytest.mark.unit

#: What the probe printed in a golden-image template (Debian 12, OpenSSH 9.2), as bytes.
RECORDED = (
    b"HOME=/root\0LOGNAME=root\0MISE_DISABLE_UPDATE_WARNING=1\0MOTD_SHOWN=pam\0"
    b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\0PWD=/root\0SHELL=/bin/bash\0SHLVL=0\0"
    b"SSH_CLIENT=10.0.2.2 51212 22\0SSH_CONNECTION=10.0.2.2 51212 10.0.2.15 22\0USER=root\0_=/usr/bin/sh\0"
    b"MULTI=line one\nline two\0"
    b"\n--banger-limits--\n"
    b"Limit                     Soft Limit           Hard Limit           Units     \n"
    b"Max stack size            8388608              unlimited            bytes     \n"
    b"Max open files            1024                 524288               files     \n"
    b"Max locked memory         383471616            383471616            bytes     \n"
    b"Max nice priority         0                    0                    \n"
    b"\n--banger-accept-env--\nacceptenv LANG\nacceptenv LC_*\n"
)


def test_the_record_keeps_the_login_and_drops_what_is_per_connection() -> None:
    login = parse_record(RECORDED)
    assert login.env == {
        "HOME": "/root",
        "LOGNAME": "root",
        "MISE_DISABLE_UPDATE_WARNING": "1",
        "MOTD_SHOWN": "pam",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SHELL": "/bin/bash",
        "USER": "root",
        "MULTI": "line one\nline two",
    }
    assert login.accept_env == ("LANG", "LC_*")
    assert login.limits == {
        "RLIMIT_STACK": [8388608, -1],
        "RLIMIT_NOFILE": [1024, 524288],
        "RLIMIT_MEMLOCK": [383471616, 383471616],
        "RLIMIT_NICE": [0, 0],
    }
    assert LoginEnvironment.from_json(login.to_json()) == login


@pytest.mark.parametrize(
    "output",
    [
        b"HOME=/root\0",
        b"HOME=/root\0\n--banger-accept-env--\n",  # no limits
        b"not an assignment\0\n--banger-limits--\n\n--banger-accept-env--\n",
        b"1BAD=x\0\n--banger-limits--\n\n--banger-accept-env--\n",
        b"A=b\0\n--banger-limits--\nMax open files  many  1024  files\n\n--banger-accept-env--\n",
    ],
)
def test_a_malformed_record_is_refused(output: bytes) -> None:
    with pytest.raises(ValueError, match="login environment"):
        parse_record(output)


def test_an_oversized_record_is_refused() -> None:
    with pytest.raises(ValueError, match="over"):
        parse_record(b"A=" + b"x" * (300 << 10) + b"\0\n--banger-limits--\n\n--banger-accept-env--\n")


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        {"env": {"A": 1}, "accept_env": []},
        {"env": {}, "accept_env": "LANG"},
        {"env": {}, "accept_env": [], "limits": {"RLIMIT_BOGUS": [1, 1]}},
        {"env": {}, "accept_env": [], "limits": {"RLIMIT_NOFILE": [1]}},
    ],
)
def test_a_malformed_stored_login_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        LoginEnvironment.from_json(value)


def test_the_client_sends_what_its_sendenv_and_setenv_say() -> None:
    config = "user root\nsendenv LANG\nsendenv LC_*\nsendenv -LC_SECRET\nsetenv FOO=bar LC_X=set\n"
    environ = {"LANG": "C.UTF-8", "LC_CTYPE": "C.UTF-8", "LC_SECRET": "no", "LC_X": "env", "HOME": "/home/me"}
    assert client_sent(config, environ) == {"LANG": "C.UTF-8", "LC_CTYPE": "C.UTF-8", "LC_X": "set", "FOO": "bar"}


def test_the_command_gets_the_login_plus_what_sshd_accepts() -> None:
    login = LoginEnvironment({"HOME": "/root", "LANG": "guest"}, ("LANG", "LC_*"))
    sent = {"LANG": "C.UTF-8", "LC_ALL": "C", "FOO": "bar", "SSH_CLIENT": "forged"}
    assert command_environment(login, sent) == {"HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C"}


def test_an_exact_environment_is_all_the_command_gets(tmp_path: Path) -> None:
    token = tmp_path / "agent-token"
    token.write_text(TOKEN)
    client = AgentClient(PairTransport(serve_agent(wire.Agent(str(token)))), TOKEN)
    out: list[bytes] = []
    env = {"HOME": "/tmp", "ONLY": "this"}
    status = client.exec(["/usr/bin/env"], stdout=out.append, stderr=out.append, env=env, env_exact=True, timeout=30)
    assert status == 0
    assert b"".join(out).decode().splitlines() == ["HOME=/tmp", "ONLY=this"]
    # Without env_exact the agent's base environment is there too.
    out.clear()
    client.exec(["/usr/bin/env"], stdout=out.append, stderr=out.append, env={"ONLY": "this"}, timeout=30)
    lines = b"".join(out).decode().splitlines()
    assert "ONLY=this" in lines and "HOME=/root" in lines and any(line.startswith("PATH=") for line in lines)


def test_the_command_gets_the_limits_it_is_given(tmp_path: Path) -> None:
    token = tmp_path / "agent-token"
    token.write_text(TOKEN)
    client = AgentClient(PairTransport(serve_agent(wire.Agent(str(token)))), TOKEN)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lower = [min(soft, 512) - 1, min(hard, 1024) - 1]
    out: list[bytes] = []
    status = client.exec(
        ["sh", "-c", "ulimit -Sn; ulimit -Hn"],
        stdout=out.append,
        stderr=out.append,
        rlimits={"RLIMIT_NOFILE": lower},
        timeout=30,
    )
    assert status == 0
    assert b"".join(out).decode().split() == [str(lower[0]), str(lower[1])]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)  # the agent's own are untouched
    # One Python's resource module has no name for, set all the same.
    out.clear()
    status = client.exec(
        ["sh", "-c", "grep 'Max file locks' /proc/self/limits"],
        stdout=out.append,
        stderr=out.append,
        rlimits={"RLIMIT_LOCKS": [100, 200]},
        timeout=30,
    )
    assert (status, b"".join(out).split()[3:5]) == (0, [b"100", b"200"])
    refused: list[bytes] = []
    with pytest.raises(AgentError, match="bad rlimit"):
        client.exec(["true"], stdout=refused.append, stderr=refused.append, rlimits={"RLIMIT_BOGUS": [1, 1]})
