"""IAM: accounts, principals, access keys, policies, and the two questions every request asks.

`authenticate_key` / `authenticate_bearer` answer "who is this?", `authorize` answers "may they?".
`check_role` is the helper jobs call before they touch the object store as their service role.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from outcrop.errors import (
    AccessDeniedException,
    ConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from outcrop.iam import buckets
from outcrop.iam.policy import Policy, access_denied_message, evaluate, parse_policy, trusts
from outcrop.iam.principal import ROLE, ROOT, USER, Principal, principal_arn
from outcrop.iam.secrets import SecretBox
from outcrop.iam.tables import AccessKeyRow, AccountRow, PolicyRow, PrincipalRow
from outcrop.platform.database import Database, utc_now

SIGV4, BEARER = "sigv4", "bearer"
ACTIVE, INACTIVE = "Active", "Inactive"
#: The service principal that Bedrock jobs assume roles as.
BEDROCK_SERVICE = "bedrock.amazonaws.com"
#: Bedrock API keys start with ABSK; the rest is base64 of "<key id>:<secret>".
BEARER_PREFIX = "ABSK"
_NAME = re.compile(r"[\w+=,.@-]{1,64}")
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_ROLE_ARN = re.compile(r"arn:aws:iam::(?P<account>\d{12}):role/(?P<name>[\w+=,.@/-]{1,64})")


def bedrock_trust_policy() -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": BEDROCK_SERVICE}, "Action": "sts:AssumeRole"}]}


def s3_access_policy(bucket: str, prefix: str = "", read_only: bool = False) -> dict[str, Any]:
    """Read (and unless read_only, write) access to one bucket or prefix, in S3's ARN terms."""
    prefix = prefix.strip("/")
    objects = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
    statements: list[dict[str, Any]] = [
        {"Sid": "ReadObjects", "Effect": "Allow", "Action": "s3:GetObject", "Resource": objects},
        {"Sid": "ListBucket", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
         **({"Condition": {"StringLike": {"s3:prefix": f"{prefix}/*"}}} if prefix else {})},
    ]
    if not read_only:
        statements.append({"Sid": "WriteObjects", "Effect": "Allow", "Action": "s3:PutObject", "Resource": objects})
    return {"Version": "2012-10-17", "Statement": statements}


def invoke_models_policy(account_id: str) -> dict[str, Any]:
    """bedrock:InvokeModel on every foundation model and on the account's provisioned throughputs: what an
    evaluation job's service role needs to ask the models it evaluates (and its judge)."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "InvokeModels", "Effect": "Allow", "Action": "bedrock:InvokeModel",
        "Resource": ["arn:aws:bedrock:*::foundation-model/*", f"arn:aws:bedrock:*:{account_id}:provisioned-model/*"]}]}


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret: str
    principal_arn: str
    kind: str = SIGV4


def _check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise ValidationException(f"{what} name '{name}' must be 1-64 letters, digits or +=,.@_-")
    return name


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class IamService:
    def __init__(self, db: Database, data_dir: Path) -> None:
        self.db = db
        self.box = SecretBox(data_dir)
        # Every request reads its key and policies from the database, because `outcrop iam` changes
        # them from another process; only the pure work (decrypting, parsing) is memoized, keyed by
        # the stored text itself so that a change is never served stale.
        self._decrypt = functools.lru_cache(maxsize=4096)(self.box.decrypt)
        self._parse = functools.lru_cache(maxsize=4096)(lambda text, name: parse_policy(text, name=name))

    # -- accounts and the root key ---------------------------------------------------------------

    def bootstrap(self, key_id: str = "", secret: str = "") -> AccessKey:
        """The first account's root key, creating the account on first start.

        An explicitly configured root key (OUTCROP_ROOT_ACCESS_KEY_ID/SECRET) is added if new."""
        with self.db.session() as session:
            account = session.scalars(select(AccountRow).order_by(AccountRow.created_at)).first()
        if account is None:
            return self.create_account("root", key_id, secret)
        root = principal_arn(account.account_id, ROOT, "")
        if key_id:
            with self.db.session() as session:
                row = session.get(AccessKeyRow, key_id)
            if row is None:
                return self._add_key(root, SIGV4, key_id, secret)
            if row.principal_arn != root or self.box.decrypt(row.secret) != secret:
                raise ValueError("OUTCROP_ROOT_ACCESS_KEY_ID names an existing key with another secret or owner")
            return AccessKey(key_id, secret, root)
        with self.db.session() as session:
            row = session.scalars(select(AccessKeyRow).where(
                AccessKeyRow.principal_arn == root, AccessKeyRow.kind == SIGV4,
                AccessKeyRow.status == ACTIVE).order_by(AccessKeyRow.created_at)).first()
        if row is None:
            return self.create_access_key(root)
        return AccessKey(row.access_key_id, self.box.decrypt(row.secret), root)

    def create_account(self, name: str, key_id: str = "", secret: str = "") -> AccessKey:
        """A new account (random 12-digit id) with its root principal and a root access key."""
        _check_name(name, "Account")
        with self.db.session() as session:
            while True:
                account_id = str(secrets.randbelow(9 * 10**11) + 10**11)
                if session.get(AccountRow, account_id) is None:
                    break
            session.add(AccountRow(account_id=account_id, name=name, created_at=utc_now()))
            session.flush()
            session.add(PrincipalRow(arn=principal_arn(account_id, ROOT, ""), account_id=account_id, kind=ROOT,
                                     name="root", created_at=utc_now()))
        root = principal_arn(account_id, ROOT, "")
        return self._add_key(root, SIGV4, key_id, secret) if key_id else self.create_access_key(root)

    def default_account(self) -> str:
        with self.db.session() as session:
            account = session.scalars(select(AccountRow).order_by(AccountRow.created_at)).first()
        if account is None:
            raise RuntimeError("no account yet: bootstrap() runs at server start")
        return account.account_id

    # -- principals -------------------------------------------------------------------------------

    def create_user(self, account_id: str, name: str) -> Principal:
        return self._create_principal(account_id, USER, _check_name(name, "User"), None)

    def create_role(self, account_id: str, name: str, trust_policy: dict[str, Any] | str | None = None) -> Principal:
        document = trust_policy if trust_policy is not None else bedrock_trust_policy()
        text = document if isinstance(document, str) else json.dumps(document)
        parse_policy(text, name="trust")  # malformed trust policies never reach the table
        return self._create_principal(account_id, ROLE, _check_name(name, "Role"), text)

    def _create_principal(self, account_id: str, kind: str, name: str, trust: str | None) -> Principal:
        arn = principal_arn(account_id, kind, name)
        try:
            with self.db.session() as session:
                if session.get(AccountRow, account_id) is None:
                    raise ResourceNotFoundException(f"Account {account_id} does not exist")
                session.add(PrincipalRow(arn=arn, account_id=account_id, kind=kind, name=name,
                                         trust_policy=trust, created_at=utc_now()))
        except IntegrityError:
            raise ConflictException(f"A {kind} named {name} already exists in account {account_id}") from None
        return Principal(account_id, arn, "", kind, name)

    def get_principal(self, arn: str) -> Principal:
        with self.db.session() as session:
            row = session.get(PrincipalRow, arn)
        if row is None:
            raise ResourceNotFoundException(f"The principal {arn} does not exist")
        return Principal(row.account_id, row.arn, "", row.kind, row.name)

    def list_principals(self, account_id: str, kind: str | None = None) -> list[Principal]:
        query = select(PrincipalRow).where(PrincipalRow.account_id == account_id).order_by(PrincipalRow.arn)
        if kind:
            query = query.where(PrincipalRow.kind == kind)
        with self.db.session() as session:
            return [Principal(r.account_id, r.arn, "", r.kind, r.name) for r in session.scalars(query)]

    def delete_principal(self, arn: str) -> None:
        with self.db.session() as session:
            row = session.get(PrincipalRow, arn)
            if row is None or row.kind == ROOT:
                raise ResourceNotFoundException(f"The principal {arn} does not exist or cannot be deleted")
            for key in session.scalars(select(AccessKeyRow).where(AccessKeyRow.principal_arn == arn)):
                session.delete(key)
            for policy in session.scalars(select(PolicyRow).where(PolicyRow.principal_arn == arn)):
                session.delete(policy)
            session.delete(row)

    # -- access keys ------------------------------------------------------------------------------

    def create_access_key(self, arn: str, kind: str = SIGV4) -> AccessKey:
        """A new SigV4 key pair, or a bearer API key (for AWS_BEARER_TOKEN_BEDROCK)."""
        return self._add_key(arn, kind, "", "")

    def _add_key(self, arn: str, kind: str, key_id: str, secret: str) -> AccessKey:
        if self.get_principal(arn).kind == ROLE:
            # As on AWS, a role is assumed, never signed in as: a long-lived key would bypass its trust policy.
            raise ValidationException(f"{arn} is a role; roles have no access keys (keys belong to users and roots)")
        if kind == SIGV4:
            key_id = key_id or "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
            secret = secret or secrets.token_urlsafe(30)[:40]
            stored = self.box.encrypt(secret)
        elif kind == BEARER:
            key_id = "BK" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))
            secret = BEARER_PREFIX + base64.b64encode(f"{key_id}:{secrets.token_urlsafe(32)}".encode()).decode()
            stored = _hash(secret)
        else:
            raise ValidationException(f"key kind must be {SIGV4} or {BEARER}")
        try:
            with self.db.session() as session:
                session.add(AccessKeyRow(access_key_id=key_id, principal_arn=arn, kind=kind, secret=stored,
                                         status=ACTIVE, created_at=utc_now()))
        except IntegrityError:
            raise ConflictException(f"The access key {key_id} already exists") from None
        return AccessKey(key_id, secret, arn, kind)

    def set_key_status(self, key_id: str, status: str, owner: str | None = None) -> None:
        """Activate or deactivate a key; with `owner`, only a key of that principal (else it 'does not exist')."""
        if status not in (ACTIVE, INACTIVE):
            raise ValidationException(f"status must be {ACTIVE} or {INACTIVE}")
        with self.db.session() as session:
            self._key_row(session, key_id, owner).status = status

    def delete_access_key(self, key_id: str, owner: str | None = None) -> None:
        with self.db.session() as session:
            session.delete(self._key_row(session, key_id, owner))

    def list_access_keys(self, owner: str) -> list[dict[str, Any]]:
        """The keys of one principal, as IAM's AccessKeyMetadata (never the secret)."""
        principal = self.get_principal(owner)
        with self.db.session() as session:
            rows = session.scalars(select(AccessKeyRow).where(AccessKeyRow.principal_arn == owner)
                                   .order_by(AccessKeyRow.created_at)).all()
            return [{"UserName": principal.name, "AccessKeyId": r.access_key_id, "Status": r.status,
                     "CreateDate": r.created_at.isoformat(), "Kind": r.kind} for r in rows]

    @staticmethod
    def _key_row(session: Any, key_id: str, owner: str | None) -> AccessKeyRow:
        row = session.get(AccessKeyRow, key_id)
        if row is None or (owner is not None and row.principal_arn != owner):
            # The same answer for a key that is missing and one that belongs to someone else.
            who = f" for {owner}" if owner else ""
            raise ResourceNotFoundException(f"The access key {key_id} does not exist{who}")
        return row

    def authenticate_key(self, key_id: str) -> tuple[Principal, str] | None:
        """(principal, plaintext secret) of an active SigV4 key, or None when there is no such key."""
        with self.db.session() as session:
            row = session.get(AccessKeyRow, key_id)
            if row is None or row.kind != SIGV4 or row.status != ACTIVE:
                return None
            owner = session.get(PrincipalRow, row.principal_arn)
            if owner.kind == ROLE:  # a role's key made by an earlier version: roles are never signed in as
                return None
            return (Principal(owner.account_id, owner.arn, key_id, owner.kind, owner.name),
                    self._decrypt(row.secret))

    def authenticate_bearer(self, token: str) -> Principal | None:
        if not token.startswith(BEARER_PREFIX):
            return None
        try:
            key_id = base64.b64decode(token[len(BEARER_PREFIX):], validate=True).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            return None
        with self.db.session() as session:
            row = session.get(AccessKeyRow, key_id)
            if row is None or row.kind != BEARER or row.status != ACTIVE \
                    or not hmac.compare_digest(row.secret, _hash(token)):
                return None
            owner = session.get(PrincipalRow, row.principal_arn)
            if owner.kind == ROLE:
                return None
            return Principal(owner.account_id, owner.arn, key_id, owner.kind, owner.name)

    # -- policies ---------------------------------------------------------------------------------

    def put_policy(self, arn: str, name: str, document: dict[str, Any] | str) -> None:
        """Attach (or replace) an inline policy on a user or role."""
        principal = self.get_principal(arn)
        if principal.is_root:
            raise ValidationException("The account root is not governed by policies; attach them to users or roles")
        text = document if isinstance(document, str) else json.dumps(document)
        parse_policy(text, name=_check_name(name, "Policy"))
        with self.db.session() as session:
            row = session.get(PolicyRow, (arn, name))
            if row is None:
                session.add(PolicyRow(principal_arn=arn, name=name, document=text))
            else:
                row.document = text

    def create_service_role(self, account_id: str, name: str, trust_policy: dict[str, Any] | str | None = None, *,
                            s3_access: str | None = None, read_only: bool = False,
                            invoke_models: bool = False) -> Principal:
        """A role for Bedrock jobs, with read (and unless read_only, write) access to `BUCKET[/PREFIX]` of its
        own account and, with invoke_models, bedrock:InvokeModel on the account's models. Another account's
        bucket is refused before anything is created."""
        bucket, _, prefix = (s3_access or "").removeprefix("s3://").partition("/")
        if s3_access:
            buckets.grantable(self.db, account_id, bucket, prefix)
        role = self.create_role(account_id, name, trust_policy)
        if s3_access:
            self.put_policy(role.arn, "s3-access", s3_access_policy(bucket, prefix, read_only))
        if invoke_models:
            self.put_policy(role.arn, "invoke-models", invoke_models_policy(account_id))
        return role

    def delete_policy(self, arn: str, name: str) -> None:
        with self.db.session() as session:
            row = session.get(PolicyRow, (arn, name))
            if row is None:
                raise ResourceNotFoundException(f"The policy {name} is not attached to {arn}")
            session.delete(row)

    def policies(self, arn: str) -> list[Policy]:
        with self.db.session() as session:
            rows = session.scalars(select(PolicyRow).where(PolicyRow.principal_arn == arn)
                                   .order_by(PolicyRow.name)).all()
            return [self._parse(r.document, r.name) for r in rows]

    def policy_documents(self, arn: str) -> dict[str, Any]:
        with self.db.session() as session:
            rows = session.scalars(select(PolicyRow).where(PolicyRow.principal_arn == arn)).all()
            return {r.name: json.loads(r.document) for r in rows}

    # -- decisions --------------------------------------------------------------------------------

    def authorize(self, principal: Principal, action: str, resource: str,
                  context: dict[str, Any] | None = None) -> None:
        """Raise AccessDeniedException unless the principal's policies allow the action on the resource.

        The account root is allowed everything in its own account, as in AWS. S3 actions first need the
        bucket to be the principal's account's (or its bucket policy to let them in): a root or a role of
        another account gets no further than that, whatever its own policies say."""
        context = {"aws:PrincipalArn": principal.arn, "aws:PrincipalAccount": principal.account_id,
                   "aws:username": principal.name, **(context or {})}
        if action.startswith("s3:"):
            buckets.check_access(self.db, principal, action, resource, context)
        if principal.is_root:
            return
        decision = evaluate(self.policies(principal.arn), action, resource, context)
        if not decision.allowed:
            raise AccessDeniedException(access_denied_message(principal.arn, action, resource, decision))

    def refuse_denied(self, principal: Principal, action: str, resource: str,
                      context: dict[str, Any] | None = None) -> None:
        """Raise AccessDeniedException only where a policy explicitly denies the action on the resource (a model
        reached beneath the one a request names: no Allow is needed on it, a Deny still binds)."""
        if principal.is_root:
            return
        context = {"aws:PrincipalArn": principal.arn, "aws:PrincipalAccount": principal.account_id,
                   "aws:username": principal.name, **(context or {})}
        decision = evaluate(self.policies(principal.arn), action, resource, context)
        if decision.reason == "explicit deny":
            raise AccessDeniedException(access_denied_message(principal.arn, action, resource, decision))

    def check_role(self, role_arn: str, account_id: str,
                   needs: list[tuple[str, str]] | list[tuple[str, str, dict[str, Any]]]) -> Principal:
        """Before a job starts: the role exists in the account, trusts Bedrock, and allows every need.

        `needs` are (action, resource) pairs such as ("s3:GetObject", "arn:aws:s3:::bucket/data.jsonl"), or
        triples with the request's condition keys (`s3:ListBucket` under a prefix carries `s3:prefix`, as the
        listing itself will); the first one missing is an AccessDeniedException naming the action and the
        resource."""
        match = _ROLE_ARN.fullmatch(role_arn or "")
        if match is None:
            raise ValidationException(f"roleArn '{role_arn}' is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
        if match.group("account") != account_id:
            raise AccessDeniedException(f"The role {role_arn} belongs to another account")
        with self.db.session() as session:
            row = session.get(PrincipalRow, role_arn)
        if row is None or row.kind != ROLE:
            raise ValidationException(f"The role {role_arn} does not exist")
        if not trusts(parse_policy(row.trust_policy or "{}", name="trust"), service=BEDROCK_SERVICE,
                      context={"aws:SourceAccount": account_id}):
            raise AccessDeniedException(f"The role {role_arn} does not trust {BEDROCK_SERVICE} to assume it "
                                        "(its trust policy must allow sts:AssumeRole for that service)")
        role = Principal(row.account_id, row.arn, "", ROLE, row.name)
        for action, resource, *context in needs:
            self.authorize(role, action, resource, context[0] if context else None)
        return role


def role_arn_account(role_arn: str) -> str | None:
    match = _ROLE_ARN.fullmatch(role_arn or "")
    return match.group("account") if match else None
