"""The data dir: an instance id made once, and a token kept private."""

from pathlib import Path

from pydantic import SecretStr

from kittyai.identity import API_TOKEN_FILE, INSTANCE_ID_FILE, Identity


def test_identity_is_created_once_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"

    first = Identity.load(data_dir, None)
    again = Identity.load(data_dir, None)

    assert first == again
    assert len(first.instance_id) == 32
    int(first.instance_id, 16)
    assert len(first.api_token) >= 40
    assert (data_dir / API_TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    assert first.api_token not in repr(first)


def test_a_configured_token_wins_and_is_not_written(tmp_path: Path) -> None:
    identity = Identity.load(tmp_path, SecretStr("from-options"))

    assert identity.api_token == "from-options"
    assert not (tmp_path / API_TOKEN_FILE).exists()
    assert (tmp_path / INSTANCE_ID_FILE).exists()


def test_an_empty_configured_token_means_generate_one(tmp_path: Path) -> None:
    identity = Identity.load(tmp_path, SecretStr(""))

    assert identity.api_token == (tmp_path / API_TOKEN_FILE).read_text().strip()


def test_an_empty_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / INSTANCE_ID_FILE).write_text("\n")

    assert Identity.load(tmp_path, None).instance_id
