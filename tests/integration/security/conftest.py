"""What every security test shares: a second account and a limited user.

Each capability adds its attacks as a module here, so the whole threat surface is read in one place.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.security.helpers import outcrop


@pytest.fixture(scope="session")
def alice(server):
    outcrop(server, "iam", "create-user", "--name", "alice")
    key = json.loads(outcrop(server, "iam", "create-access-key", "--user-name", "alice").stdout)
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="session")
def second_account(server):
    created = json.loads(outcrop(server, "iam", "create-account", "--name", "tenant-b").stdout)
    return created["AccountId"], (created["AccessKeyId"], created["SecretAccessKey"])
