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
from outcrop.iam.service import BEARER, SIGV4, IamService
from outcrop.platform import jsontext

PREFIX = "/_outcrop/iam/"
SERVICE = "outcrop-iam"


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
    role = iam.create_service_role(caller.account_id, _name(body, "RoleName"), body.get("AssumeRolePolicyDocument"),
                                   s3_access=_name(body, "S3Access") if body.get("S3Access") else None,
                                   read_only=bool(body.get("ReadOnly")), invoke_models=bool(body.get("InvokeModels")))
    return {"Arn": role.arn}


#: Actions on access keys: they act on the key's holder, named by UserName or, without one, the caller.
KEY_ACTIONS = frozenset({"CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey", "ListAccessKeys"})


def _key_holder(caller: Principal, body: dict[str, Any]) -> tuple[str, str]:
    """(ARN, kind) of the principal whose keys an action manages: `UserName`, else the caller itself,
    as IAM does. Roles hold no keys."""
    if "RoleName" in body:
        raise ValidationException("Roles have no access keys: they are assumed, never signed in as")
    if "UserName" in body:
        return principal_arn(caller.account_id, USER, _name(body, "UserName")), USER
    return caller.arn, caller.kind


def _create_access_key(iam: IamService, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
    key = iam.create_access_key(_key_holder(caller, body)[0], BEARER if body.get("Bearer") else SIGV4)
    if key.kind == BEARER:
        return {"ApiKeyId": key.access_key_id, "ApiKey": key.secret}
    return {"AccessKeyId": key.access_key_id, "SecretAccessKey": key.secret}


def _update_access_key(iam: IamService, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
    # The key must be the holder's: authorizing `user/alice` and then touching the root's key is the hole
    # this closes. Another principal's key answers as a missing one.
    iam.set_key_status(_name(body, "AccessKeyId"), _name(body, "Status"), owner=_key_holder(caller, body)[0])
    return {}


def _delete_access_key(iam: IamService, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
    iam.delete_access_key(_name(body, "AccessKeyId"), owner=_key_holder(caller, body)[0])
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
    "ListAccessKeys": lambda iam, c, b: {"AccessKeyMetadata": iam.list_access_keys(_key_holder(c, b)[0])},
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
    resource, kind = _key_holder(caller, body) if action in KEY_ACTIONS else _target(caller, body)
    if action in ("ListUsers", "ListRoles"):
        resource = principal_arn(caller.account_id, "root", "")
    elif kind == "root" and not caller.is_root:
        # Keys and policies of the account root are the root's business alone, as in AWS.
        raise AccessDeniedException(f"Only the account root can perform iam:{action} on {resource}")
    iam.authorize(caller, f"iam:{action}", resource, context)
    return json.dumps(ACTIONS[action](iam, caller, body) or {}).encode()
