"""The data dir's outcrop.toml, written by hand before the first start, is Outcrop's: made private with its folder."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from outcrop.platform.private import private_dir


@pytest.fixture
def umask():
    previous = os.umask(0o022)  # as an operator's shell writes files
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_outcrop_toml_written_before_the_first_start_is_made_0600_and_its_folder_0700(tmp_path, umask, caplog):
    data = tmp_path / "srv-outcrop"
    data.mkdir(mode=0o755)
    (data / "outcrop.toml").write_text('database_url = "postgresql://outcrop:secret@db/outcrop"\n')
    assert (_mode(data), _mode(data / "outcrop.toml")) == (0o755, 0o644)
    with caplog.at_level(logging.WARNING, logger="outcrop.platform.private"):
        private_dir(data)
    assert (_mode(data), _mode(data / "outcrop.toml")) == (0o700, 0o600)
    assert not caplog.records  # no "holds other files than Outcrop's"

