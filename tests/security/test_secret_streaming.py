"""A secret written in parts, with pauses between them, never reaches a log in clear.

The attacker is a step that knows its secret and wants it in vigil's log (which people,
the dashboard and reports read): it splits the value, or an encoding of it, across writes
and waits between them, hoping a timer releases the held prefix. The pause is injected as
the executor's own idle callback (``LogSink.idle``), called as often as a long pause
would, so nothing here depends on the machine's speed.
"""

from __future__ import annotations

import base64
import json
import shlex
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clitools import vigil, write_plan
from vigil.executors.process import LogSink
from vigil.safety.redact import MASK, Redactor, StreamRedactor, encoded_forms

SECRET = "hunter2-Sw0rdf1sh-7c1d"


def encodings(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "raw": value,
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "url": quote(value, safe=""),
        "json": json.dumps(value + '"\\')[1:-1],
    }


def redacting_sink(path: Path, redactor: Redactor) -> LogSink:
    """A log sink wired as an attempt wires it (engine/attempt.py)."""
    stream = StreamRedactor(redactor)
    return LogSink(
        path,
        transform=lambda chunk: stream.feed(chunk).encode(),
        flush_transform=lambda: stream.close().encode(),
    )


def pause(sink: LogSink) -> None:
    """A long pause in the step's output, as the executor's poll loop sees it."""
    for _ in range(50):
        sink.idle()


@pytest.mark.parametrize("encoding", sorted(encodings(SECRET)))
def test_secret_split_at_every_offset_with_a_pause_is_masked(tmp_path: Path, encoding: str) -> None:
    value = SECRET + '"\\' if encoding == "json" else SECRET
    redactor = Redactor([value])
    leaked = encodings(SECRET)[encoding]
    for cut in range(1, len(leaked)):
        log = tmp_path / f"{encoding}-{cut}.log"
        sink = redacting_sink(log, redactor)
        sink.write(f"before {leaked[:cut]}".encode())
        pause(sink)
        during = log.read_text()
        assert leaked[:cut] not in during or leaked[:cut] in "before ", (cut, during)
        sink.write(f"{leaked[cut:]} after\n".encode())
        pause(sink)
        sink.close()
        text = log.read_text()
        assert leaked not in text and SECRET not in text, (cut, text)
        assert text == f"before {MASK} after\n", (cut, text)


def test_secret_in_three_chunks_with_pauses_is_masked(tmp_path: Path) -> None:
    redactor = Redactor([SECRET])
    n = len(SECRET)
    for i in range(1, n - 1):
        for j in range(i + 1, n):
            log = tmp_path / f"{i}-{j}.log"
            sink = redacting_sink(log, redactor)
            for part in (SECRET[:i], SECRET[i:j], SECRET[j:] + "\n"):
                sink.write(part.encode())
                pause(sink)
                assert SECRET[:i] not in log.read_text()
            sink.close()
            assert log.read_text() == MASK + "\n"


def test_secret_at_the_very_end_of_the_stream_is_masked(tmp_path: Path) -> None:
    redactor = Redactor([SECRET])
    for cut in range(1, len(SECRET)):
        log = tmp_path / f"end-{cut}.log"
        sink = redacting_sink(log, redactor)
        sink.write(SECRET[:cut].encode())
        pause(sink)
        sink.write(SECRET[cut:].encode())
        sink.close()
        assert log.read_text() == MASK


def test_output_that_only_looks_like_a_prefix_is_released_by_the_next_bytes() -> None:
    stream = StreamRedactor(Redactor([SECRET]))
    assert stream.feed("log line hunter") == "log line "
    assert stream.held == len("hunter")
    assert stream.feed("s are here\n") == "hunters are here\n"
    assert stream.held == 0


def test_held_back_text_stays_bounded() -> None:
    redactor = Redactor([SECRET])
    stream = StreamRedactor(redactor)
    longest = max(len(f) for f in encoded_forms(SECRET))
    out = []
    for _ in range(2000):
        out.append(stream.feed("hunter2-Sw0rdf1sh-7c1" * 3))
        assert stream.held < longest
    out.append(stream.close())
    assert SECRET not in "".join(out)


def test_a_private_key_block_longer_than_the_bound_is_masked_to_its_end() -> None:
    stream = StreamRedactor(Redactor([]))
    out = [stream.feed("start\n-----BEGIN RSA PRIVATE KEY-----\n")]
    body = "MIIEowIBAAKCAQEA" * 1000 + "\n"
    for _ in range(100):
        out.append(stream.feed(body))
        assert stream.held <= (1 << 20) + len(body)
    out.append(stream.feed("-----END RSA PRIVATE KEY-----\nafter\n"))
    out.append(stream.close())
    text = "".join(out)
    assert "MIIEowIBAAKCAQEA" not in text
    assert text.startswith("start\n") and text.endswith("after\n")


_ALPHABET = st.sampled_from(list("abcdefghij0123456789 \n-_.:/=+"))
_SECRET_TEXT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh0123456789", min_size=6, max_size=24
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secrets=st.lists(_SECRET_TEXT, min_size=1, max_size=3, unique=True),
    pieces=st.lists(
        st.tuples(st.text(alphabet=_ALPHABET, max_size=30), st.integers(0, 2)), max_size=8
    ),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    data=st.data(),
)
def test_random_splits_of_a_stream_with_secrets_mask_exactly_the_secrets(
    secrets: list[str], pieces: list[tuple[str, int]], cuts: list[int], data: st.DataObject
) -> None:
    redactor = Redactor(secrets)
    stream_text = "".join(
        text + (secrets[k % len(secrets)] if k < 2 else encodings(secrets[0])["base64"])
        for text, k in pieces
    )
    points = sorted({c % (len(stream_text) + 1) for c in cuts})
    chunks = [
        stream_text[a:b] for a, b in zip([0, *points], [*points, len(stream_text)], strict=True)
    ]
    stream = StreamRedactor(redactor)
    out = "".join(stream.feed(c) for c in chunks) + stream.close()
    for secret in secrets:
        assert secret not in out
    assert out == redactor.redact(stream_text)


PARTS = r"""
import base64, os, sys, threading
t = os.environ["TOKEN"]
b = base64.b64encode(t.encode()).decode()
half = len(t) // 2
sys.stdout.write(t[:half]); sys.stdout.flush()
threading.Event().wait(0.6)   # longer than the executor's idle interval
sys.stderr.write(t[half:] + "\n"); sys.stderr.flush()
sys.stdout.write("b64:" + b[:10]); sys.stdout.flush()
threading.Event().wait(0.6)
sys.stdout.write(b[10:] + "\n")
sys.stdout.write("tail:" + t[:5]); sys.stdout.flush()
threading.Event().wait(0.6)
sys.stdout.write(t[5:]); sys.stdout.flush()
sys.exit(3)
"""


@pytest.mark.slow
def test_a_step_printing_its_secret_in_parts_leaks_it_nowhere(tmp_path: Path, backend: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text('[secrets]\nTOKEN = { env = "MY_TOKEN" }\n')
    script = f"{shlex.quote(sys.executable)} -c {shlex.quote(PARTS)}"
    write_plan(
        ws / "plan.yaml",
        {
            "name": "parts",
            "project": "parts",
            "phases": [{"id": "p", "tasks": [{"id": "leak", "secrets": ["TOKEN"], "run": script}]}],
        },
    )
    env = {"MY_TOKEN": SECRET, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    run = vigil("run", "plan.yaml", "--run-id", "r", cwd=ws, env=env)
    assert run.returncode == 1, run.stderr
    seen = [run.stdout, run.stderr]
    for args in (
        ("logs", "r"),
        ("logs", "r", "leak"),
        ("report", "r"),
        ("report", "r", "--format", "json"),
        ("postmortem", "r"),
        ("status", "r", "--format", "json"),
    ):
        out = vigil(*args, cwd=ws, env=env)
        seen += [out.stdout, out.stderr]
    for path in (ws / ".vigil").rglob("*"):
        if path.is_file() and "objects" not in path.parts:
            seen.append(path.read_bytes().decode("utf-8", "replace"))
    everything = "\n".join(seen)
    b64 = base64.b64encode(SECRET.encode()).decode()
    assert SECRET not in everything and b64 not in everything
    assert SECRET[: len(SECRET) // 2] not in everything
    logs = vigil("logs", "r", "leak", cwd=ws, env=env).stdout
    assert MASK in logs
