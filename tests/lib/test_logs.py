"""JSON log lines: fields, correlation ids, and secrets that never get out."""

import json
import logging

from kittyai.catalog import ServiceName
from kittyai.logs import CORRELATION_ID, REDACTED, JsonFormatter, SecretRedactor

SECRET = 'pa"ss\\wörd-1234'


def render(record: logging.LogRecord, *secrets: str) -> str:
    return JsonFormatter(ServiceName.RAG, SecretRedactor(secrets)).format(record)


def make_record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    return logging.getLogger("kittyai.test").makeRecord(
        "kittyai.test", logging.WARNING, __file__, 1, msg, args, None, extra=extra
    )


def test_a_line_is_one_json_object_with_the_fields() -> None:
    line = render(make_record("ingested %d documents", 3, job="nightly"))

    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed.pop("ts").endswith("+00:00")
    assert parsed == {
        "level": "WARNING",
        "logger": "kittyai.test",
        "msg": "ingested 3 documents",
        "service": "rag",
        "job": "nightly",
    }


def test_the_correlation_id_of_the_current_context_is_included() -> None:
    token = CORRELATION_ID.set("req-1")
    try:
        assert json.loads(render(make_record("hi")))["correlation_id"] == "req-1"
    finally:
        CORRELATION_ID.reset(token)
    assert "correlation_id" not in json.loads(render(make_record("hi")))


def test_exceptions_are_rendered() -> None:
    record = make_record("failed")
    error = KeyError("missing")
    record.exc_info = (type(error), error, None)

    assert "KeyError: 'missing'" in json.loads(render(record))["exc_info"]


def test_secrets_are_redacted_everywhere_in_the_line() -> None:
    record = make_record("token %s", SECRET, header=f"Bearer {SECRET}")
    error = RuntimeError(f"login with {SECRET} failed")
    record.exc_info = (type(error), error, None)

    line = render(record, SECRET, "", "other-secret")

    assert SECRET not in line
    assert json.dumps(SECRET)[1:-1] not in line
    parsed = json.loads(line)
    assert parsed["msg"] == f"token {REDACTED}"
    assert parsed["header"] == f"Bearer {REDACTED}"
    assert f"login with {REDACTED} failed" in parsed["exc_info"]


def test_a_secret_containing_another_is_redacted_whole() -> None:
    line = render(make_record("abcdef"), "abc", "abcdef")

    assert json.loads(line)["msg"] == REDACTED
