from pathlib import Path

import pytest

from outcrop.platform.config import load_settings


def test_defaults(monkeypatch):
    for name in ("OUTCROP_DATA_DIR", "OUTCROP_PORT", "OUTCROP_HOST", "OUTCROP_DATABASE_URL", "OUTCROP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.data_dir == Path("~/.outcrop").expanduser()
    assert (settings.host, settings.port) == ("127.0.0.1", 8600)
    assert settings.resolved_database_url == f"sqlite:///{settings.data_dir / 'outcrop.db'}"
    assert settings.objects_dir == settings.data_dir / "objects"


def test_flag_beats_environment_beats_toml(tmp_path, monkeypatch):
    (tmp_path / "outcrop.toml").write_text('port = 7000\nhost = "0.0.0.0"\ns3_endpoint = "http://minio:9000"\n')
    monkeypatch.setenv("OUTCROP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OUTCROP_PORT", "7100")
    settings = load_settings()
    assert settings.port == 7100  # environment over file
    assert settings.host == "0.0.0.0"  # file over default
    assert settings.s3_endpoint == "http://minio:9000"
    assert load_settings(port=7200).port == 7200  # flag over environment
    assert load_settings(port=None).port == 7100  # an unset flag changes nothing


def test_config_file_named_by_environment(tmp_path, monkeypatch):
    config = tmp_path / "elsewhere.toml"
    config.write_text('database_url = "postgresql://u:p@db/outcrop"\n')
    monkeypatch.setenv("OUTCROP_CONFIG", str(config))
    assert load_settings(data_dir=tmp_path).resolved_database_url == "postgresql://u:p@db/outcrop"


def test_bad_values_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OUTCROP_PORT", "eighty")
    with pytest.raises(ValueError, match="port"):
        load_settings(data_dir=tmp_path)
    monkeypatch.delenv("OUTCROP_PORT")
    (tmp_path / "outcrop.toml").write_text("prot = 1\n")
    with pytest.raises(ValueError, match="prot"):
        load_settings(data_dir=tmp_path)


def test_every_setting_takes_its_type_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OUTCROP_PROVISIONED_QUEUE_SECONDS", "0.25")
    monkeypatch.setenv("OUTCROP_MU_TOKENS_PER_MINUTE", "100")
    settings = load_settings(data_dir=tmp_path)
    assert settings.provisioned_queue_seconds == 0.25 and settings.mu_tokens_per_minute == 100
