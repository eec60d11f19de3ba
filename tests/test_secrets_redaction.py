"""Secrets: resolved from the env, file or command vigil.toml declares; a task gets only its
own; no leak in any form."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vigil.plan.models import Plan
from vigil.safety.redact import MASK, Redactor, StreamRedactor
from vigil.safety.secrets import (
    MAX_SECRET_BYTES,
    SecretsConfig,
    SecretSource,
    SecretUnavailable,
    SecretUnknown,
    check_secret_names,
    redactor_for,
    resolve_secrets,
    secrets_for,
)
from vigil.workspace.hidden import Hidden

# The mask is made of '*'; a secret of only mask characters could be "re-formed" by a mask.
SECRET = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="*", exclude_categories=("Cs",)),
    min_size=4,
    max_size=40,
)
NOISE = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        raw.hex(),
        raw.hex().upper(),
    ]


@given(SECRET, NOISE, NOISE, st.integers(0, 10))
@settings(max_examples=300, deadline=None)
def test_no_encoding_of_a_secret_survives(secret: str, before: str, after: str, which: int) -> None:
    forms = _forms(secret)
    form = forms[which % len(forms)]
    out = Redactor([secret]).redact(before + form + after)
    for f in forms:
        if len(f) >= 4:
            assert f not in out


@given(SECRET, st.binary(max_size=5), st.binary(max_size=5), st.booleans())
@settings(max_examples=300, deadline=None)
def test_secret_inside_a_longer_base64_stream_is_masked_at_any_alignment(
    secret: str, prefix: bytes, suffix: bytes, urlsafe: bool
) -> None:
    assume(len(secret.encode()) >= 6)
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    stream = encode(prefix + secret.encode() + suffix).decode()
    out = Redactor([secret]).redact(stream)
    assert MASK in out
    # Whatever survives, no window of it decodes to anything containing the secret.
    for start in range(0, max(1, len(out) - 3)):
        window = out[start:].replace(MASK, "")
        for cut in range(len(window) - len(window) % 4, 0, -4):
            try:
                decoded = base64.b64decode(window[:cut], altchars=b"-_" if urlsafe else None)
            except ValueError:
                continue
            assert secret.encode() not in decoded


@pytest.mark.slow
@given(SECRET, NOISE, NOISE, st.lists(st.integers(1, 30), min_size=1, max_size=20))
@settings(max_examples=300, deadline=None)
def test_streamed_chunks_never_show_a_secret_split_between_them(
    secret: str, before: str, after: str, sizes: list[int]
) -> None:
    text = before + secret + after + base64.b64encode(secret.encode()).decode() + before
    stream = StreamRedactor(Redactor([secret]))
    pieces: list[str] = []
    pos = 0
    for size in sizes * 50:
        if pos >= len(text):
            break
        pieces.append(stream.feed(text[pos : pos + size]))
        pos += size
    if pos < len(text):
        pieces.append(stream.feed(text[pos:]))
    pieces.append(stream.close())
    out = "".join(pieces)
    assert secret not in out
    assert base64.b64encode(secret.encode()).decode().rstrip("=") not in out
    assert MASK in out
    # Text without secrets passes through whole.
    assert out.replace(MASK, "") == Redactor([secret]).redact(text).replace(MASK, "")


def test_stream_of_bytes_split_inside_a_utf8_character() -> None:
    secret = "pässwörd-ü"
    data = f"log: {secret} done\n".encode()
    stream = StreamRedactor(Redactor([secret]))
    out = "".join(stream.feed(data[i : i + 1]) for i in range(len(data))) + stream.close()
    assert out == f"log: {MASK} done\n"


@pytest.mark.parametrize(
    "token",
    [
        "ghp_" + "a1B2" * 9,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-1234567890-abcdefghij",
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----",
    ],
)
def test_well_known_tokens_are_masked_undeclared(token: str) -> None:
    out = Redactor([]).redact(f"before {token} after")
    assert out == f"before {MASK} after"
    stream = StreamRedactor(Redactor([]))
    text = f"before {token} after"
    streamed = "".join(stream.feed(text[i : i + 5]) for i in range(0, len(text), 5))
    assert streamed + stream.close() == out


def test_unterminated_private_key_block_is_held_and_masked() -> None:
    stream = StreamRedactor(Redactor([]))
    shown = stream.feed("ok\n-----BEGIN RSA PRIVATE KEY-----\n" + "QUJD" * 300)
    assert "QUJD" not in shown and "BEGIN" not in shown
    assert "QUJD" not in stream.close()


def _plan(task_secrets: list[str]) -> Plan:
    return Plan.model_validate(
        {
            "name": "p",
            "project": "shop",
            "phases": [
                {
                    "id": "a",
                    "tasks": [
                        {"id": "one", "run": "true", "secrets": task_secrets},
                        {"id": "two", "run": "true"},
                    ],
                }
            ],
        }
    )


def _declared(sources: dict[str, object]) -> dict[str, SecretSource]:
    """Sources as ``[secrets]`` in vigil.toml declares them."""
    return dict(SecretsConfig.model_validate(sources).root)


def _resolve(
    sources: dict[str, object], ws: Path, environ: dict[str, str], names: list[str] | None = None
) -> dict[str, str]:
    return resolve_secrets(
        list(sources) if names is None else names,
        _declared(sources),
        workspace=ws,
        hidden=Hidden.for_workspace(ws),
        environ=environ,
    )


def test_resolves_env_file_and_command_and_gives_a_task_only_its_own(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("file-secret-value\n")
    sources: dict[str, object] = {
        "API": {"env": "MY_API"},
        "DB": {"file": "token.txt"},
        "CMD": {"command": "printf 'cmd-secret-%s' 42"},
    }
    values = _resolve(sources, tmp_path, {"MY_API": "env-secret-value", "PATH": "/usr/bin:/bin"})
    assert values == {
        "API": "env-secret-value",
        "DB": "file-secret-value",
        "CMD": "cmd-secret-42",
    }
    plan = _plan(["API", "CMD"])
    assert secrets_for(plan.task("one"), values) == {
        "API": "env-secret-value",
        "CMD": "cmd-secret-42",
    }
    assert secrets_for(plan.task("two"), values) == {}
    redact = redactor_for(values).redact
    assert redact("a file-secret-value b") == f"a {MASK} b"


def test_only_the_secrets_a_plan_names_are_read(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    sources: dict[str, object] = {
        "USED": {"env": "MY_API"},
        "UNUSED": {"command": f"touch {marker}; echo unused-value"},
    }
    values = _resolve(sources, tmp_path, {"MY_API": "env-secret-value"}, names=["USED"])
    assert values == {"USED": "env-secret-value"}
    assert not marker.exists()


def test_a_command_gets_the_step_allowlist_and_what_pass_env_names(tmp_path: Path) -> None:
    environ = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PGPASSWORD": "db-password-of-vigil",
        "VAULT_TOKEN": "vault-token-value",
    }
    show = 'printf \'%s|%s|%s|%s\' "$LANG" "${PGPASSWORD:-none}" "${VAULT_TOKEN:-none}" "$PWD"'
    sources: dict[str, object] = {
        "PLAIN": {"command": show},
        "PASSED": {"command": show, "pass_env": ["VAULT_TOKEN"]},
    }
    values = _resolve(sources, tmp_path, environ)
    home = str(Path.home())
    assert values["PLAIN"] == f"C.UTF-8|none|none|{home}"
    assert values["PASSED"] == f"C.UTF-8|none|vault-token-value|{home}"


def test_unavailable_and_unknown_secrets_are_errors_that_do_not_echo_values(
    tmp_path: Path,
) -> None:
    with pytest.raises(SecretUnavailable):
        _resolve({"A": {"env": "NOPE"}}, tmp_path, {})
    with pytest.raises(SecretUnavailable):
        _resolve({"A": {"file": "missing.txt"}}, tmp_path, {})
    with pytest.raises(SecretUnavailable) as info:
        _resolve(
            {"A": {"command": "echo leaked-value; exit 3"}}, tmp_path, {"PATH": "/usr/bin:/bin"}
        )
    assert "leaked-value" not in str(info.value)
    with pytest.raises(SecretUnavailable):
        _resolve({"A": {"env": "SHORT"}}, tmp_path, {"SHORT": "ab"})
    (tmp_path / "big").write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(SecretUnavailable):
        _resolve({"A": {"file": "big"}}, tmp_path, {})
    with pytest.raises(SecretUnknown):
        check_secret_names(_plan(["B"]), _declared({"A": {"env": "X"}}))
    check_secret_names(_plan(["A"]), _declared({"A": {"env": "X"}}))


def test_a_secret_source_names_exactly_one_origin_and_a_valid_name() -> None:
    for bad in (
        {"A": {"env": "X", "file": "y"}},
        {"A": {}},
        {"A": {"env": "X", "pass_env": ["Y"]}},
        {"not-a-var": {"env": "X"}},
    ):
        with pytest.raises(ValueError):
            _declared(bad)


def test_a_command_that_hangs_is_killed_with_everything_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vigil.safety import secrets

    monkeypatch.setattr(secrets, "COMMAND_TIMEOUT", 1.0)
    pidfile = tmp_path / "child.pid"
    hang = f"sleep 300 & echo $! > {pidfile}; wait"
    with pytest.raises(SecretUnavailable, match="timed out"):
        _resolve({"A": {"command": hang}}, tmp_path, {"PATH": "/usr/bin:/bin"})
    child = int(pidfile.read_text())
    try:
        with open(f"/proc/{child}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z", "X")


def test_a_command_printing_too_much_is_refused(tmp_path: Path) -> None:
    big = f"head -c {MAX_SECRET_BYTES + 1} /dev/zero | tr '\\0' x"
    with pytest.raises(SecretUnavailable, match="more than"):
        _resolve({"A": {"command": big}}, tmp_path, {"PATH": "/usr/bin:/bin"})


def test_a_command_s_standard_error_is_not_passed_on(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # It may echo the value (or another secret); vigil never shows it.
    noisy = "echo stderr-secret-9c2 >&2; echo the-value"
    assert _resolve({"A": {"command": noisy}}, tmp_path, {"PATH": "/usr/bin:/bin"}) == {
        "A": "the-value"
    }
    captured = capfd.readouterr()
    assert "stderr-secret-9c2" not in captured.err + captured.out
