"""Encryption of stored secrets with a key that lives in the data dir (mode 0600), never in the database.

Whoever copies the database alone gets ciphertext; the key file and the database together are the
secret. Fernet (AES-128-CBC with HMAC-SHA256) from `cryptography` does the work.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE_NAME = "secret.key"


class SecretBox:
    def __init__(self, data_dir: Path) -> None:
        path = data_dir / KEY_FILE_NAME
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first; use theirs
                pass
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(Fernet.generate_key())
        self._fernet = Fernet(path.read_bytes().strip())

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise RuntimeError("a stored secret does not decrypt with this data dir's secret.key") from None
