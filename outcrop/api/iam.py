"""Outcrop's own small JSON API for IAM, under `/_outcrop/iam/<Action>` (POST, JSON body, SigV4-signed).

Bedrock has no IAM operations of its own, and AWS's IAM speaks a query protocol no Bedrock client
needs; this API offers what `outcrop iam` does, for scripts that only have HTTP. Each action is
authorized as `iam:<Action>` on the principal it touches, within the caller's own account.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from outcrop.errors import AccessDeniedException, SerializationException, UnknownOperationException, ValidationException
from outcrop.iam.principal import ROLE, USER, Principal, principal_arn
from outcrop.iam.service import BEARER, SIGV4, IamService, invoke_models_policy, s3_access_policy
from outcrop.platform import jsontext

PREFIX = "/_outcrop/iam/"


def _name(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationException(f"{key} is required and must be a string")
    return value


def _document(body: dict[str, Any], key: str) -> Any:
    value = body.get(key)
    if not isinstance(value, str | dict):
        raise ValidationException(f"{key} is required: a policy document (JSON object or string)")
    return value


def _target(caller: Principal, body: dict[str, Any]) -> tuple[str, str]:
    """(resource ARN, kind) of the user or role an action names; the account root when neither."""
    if "RoleName" in body:
        return principal_arn(caller.account_id, ROLE, _name(body, "RoleName")), ROLE
    if "UserName" in body:
        return principal_arn(caller.account_id, USER, _name(body, "UserName")), USER
    return principal_arn(caller.account_id, "root", ""), "root"


def _create_role(iam: IamService, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
    role = iam.create_role(caller.account_id, _name(body, "RoleName"), body.get("AssumeRolePolicyDocument"))
    if body.get("S3Access"):
        bucket, _, prefix = _name(body, "S3Access").removeprefix("s3://").partition("/")
        iam.put_policy(role.arn, "s3-access", s3_access_policy(bucket, prefix, bool(body.get("ReadOnly"))))
    if body.get("InvokeModels"):
        iam.put_policy(role.arn, "invoke-models", invoke_models_policy(caller.account_id))
    return {"Arn": role.arn}


def _create_access_key(iam: IamService, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
    key = iam.create_access_key(_target(caller, body)[0], BEARER if body.get("Bearer") else SIGV4)
    if key.kind == BEARER:
        return {"ApiKeyId": key.access_key_id, "ApiKey": key.secret}
    return {"AccessKeyId": key.access_key_id, "SecretAccessKey": key.secret}


def _owned_key(iam: IamService, caller: Principal, key_id: str) -> None:
    """A caller may only manage keys of its own account (another account's key 'does not exist')."""
    from outcrop.errors import ResourceNotFoundException
    from outcrop.iam.tables import AccessKeyRow

    with iam.db.session() as session:
        row = session.get(AccessKeyRow, key_id)
    if row is None or row.principal_arn.split(":")[4] != caller.account_id:
        raise ResourceNotFoundException(f"The access key {key_id} does not exist")


def _update_access_key(iam: IamService, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
    _owned_key(iam, caller, _name(body, "AccessKeyId"))
    iam.set_key_status(body["AccessKeyId"], _name(body, "Status"))
    return {}


def _delete_access_key(iam: IamService, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
    _owned_key(iam, caller, _name(body, "AccessKeyId"))
    iam.delete_access_key(body["AccessKeyId"])
    return {}


ACTIONS: dict[str, Callable[[IamService, Principal, dict[str, Any]], dict[str, Any]]] = {
    "CreateUser": lambda iam, c, b: {"Arn": iam.create_user(c.account_id, _name(b, "UserName")).arn},
    "CreateRole": _create_role,
    "DeleteUser": lambda iam, c, b: iam.delete_principal(_target(c, b)[0]) or {},
    "DeleteRole": lambda iam, c, b: iam.delete_principal(_target(c, b)[0]) or {},
    "ListUsers": lambda iam, c, b: {"Users": [p.arn for p in iam.list_principals(c.account_id, USER)]},
    "ListRoles": lambda iam, c, b: {"Roles": [p.arn for p in iam.list_principals(c.account_id, ROLE)]},
    "CreateAccessKey": _create_access_key,
    "UpdateAccessKey": _update_access_key,
    "DeleteAccessKey": _delete_access_key,
    "PutUserPolicy": lambda iam, c, b: iam.put_policy(
        _target(c, b)[0], _name(b, "PolicyName"), _document(b, "PolicyDocument")) or {},
    "PutRolePolicy": lambda iam, c, b: iam.put_policy(
        _target(c, b)[0], _name(b, "PolicyName"), _document(b, "PolicyDocument")) or {},
    "DeleteUserPolicy": lambda iam, c, b: iam.delete_policy(_target(c, b)[0], _name(b, "PolicyName")) or {},
    "DeleteRolePolicy": lambda iam, c, b: iam.delete_policy(_target(c, b)[0], _name(b, "PolicyName")) or {},
    "GetUserPolicies": lambda iam, c, b: {"Policies": iam.policy_documents(_target(c, b)[0])},
    "GetRolePolicies": lambda iam, c, b: {"Policies": iam.policy_documents(_target(c, b)[0])},
}


def action_of(method: str, raw_path: str) -> str:
    action = raw_path[len(PREFIX):]
    if method != "POST" or action not in ACTIONS:
        raise UnknownOperationException(
            f"No Outcrop IAM action answers {method} {raw_path}; POST one of {', '.join(sorted(ACTIONS))}")
    return action


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        document = jsontext.loads(body or b"{}")
    except jsontext.InvalidJson as exc:
        raise SerializationException(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SerializationException("The request body must be a JSON object")
    return document


def handle(iam: IamService, caller: Principal, action: str, body: dict[str, Any], context: dict[str, Any]) -> bytes:
    """Authorize `iam:<Action>` on the target principal, run the action, return the JSON response."""
    resource, kind = _target(caller, body)
    if action in ("ListUsers", "ListRoles"):
        resource = principal_arn(caller.account_id, "root", "")
    elif kind == "root" and not caller.is_root:
        # Keys and policies of the account root are the root's business alone, as in AWS.
        raise AccessDeniedException(f"Only the account root can perform iam:{action} on {resource}")
    iam.authorize(caller, f"iam:{action}", resource, context)
    return json.dumps(ACTIONS[action](iam, caller, body) or {}).encode()
