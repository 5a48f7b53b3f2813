"""IAM: the account's users and roles, their inline policies, and users' access keys.

Every change is a call of Outcrop's IAM JSON API as the signed-in principal (`visit.call_json("iam", ...)`),
authorized as `iam:<Action>` on the user or role it touches, so a form shows the API's own error. A new key's
secret is shown once, in the answer to the POST that made it: never in a URL, never again.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import AccessDeniedException, BedrockError
from outcrop.iam.principal import principal_arn

#: A sample for the policy form: what most users of the console need first.
SAMPLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels", "bedrock:InvokeModel"], "Resource": "*"}]},
    indent=2)


@dataclass(frozen=True)
class Kind:
    """Users and roles share their pages; the API names them apart (UserName / RoleName, *User* / *Role*)."""

    path: str  # "users" or "roles"
    noun: str  # "User" or "Role"

    @property
    def member(self) -> str:
        return f"{self.noun}Name"


KINDS = {"users": Kind("users", "User"), "roles": Kind("roles", "Role")}
KIND = "(?P<kind>users|roles)"


def _name_of(arn: str) -> str:
    """`alice` from arn:aws:iam::123456789012:user/alice."""
    return arn.split(":", 5)[-1].split("/", 1)[-1]


# -- the lists and the create forms ------------------------------------------------------------------------


@page("GET", "iam")
def principals(visit: Visit) -> Response:
    return _overview(visit)


def _overview(visit: Visit, *, values: dict[str, str] | None = None, user_error: str = "", role_error: str = "",
              status: int = 200) -> Response:
    users = visit.call_json("iam", "ListUsers")["Users"]
    roles = visit.call_json("iam", "ListRoles")["Roles"]
    return visit.render("iam.html", "IAM", status=status, users=[(_name_of(a), a) for a in users],
                        roles=[(_name_of(a), a) for a in roles], values=values or {}, user_error=user_error,
                        role_error=role_error)


def _after_failed_create(visit: Visit, exc: BedrockError, which: str) -> Response:
    """The lists again, with the form that failed and the API's words; lists it may not read come back empty."""
    error = {f"{which}_error": f"{exc.code}: {exc.message}"}
    try:
        return _overview(visit, values=visit.form, status=exc.status, **error)
    except BedrockError:
        return visit.render("iam.html", "IAM", status=exc.status, users=None, roles=None, values=visit.form,
                            **{"user_error": "", "role_error": "", **error})


@page("POST", "iam/users")
def create_user(visit: Visit) -> Response:
    name = visit.form.get("UserName", "").strip()
    try:
        visit.call_json("iam", "CreateUser", {"UserName": name})
    except BedrockError as exc:
        return _after_failed_create(visit, exc, "user")
    return visit.redirect(f"iam/users/{urllib.parse.quote(name, safe='')}")


@page("POST", "iam/roles")
def create_role(visit: Visit) -> Response:
    form = visit.form
    name = form.get("RoleName", "").strip()
    body: dict[str, Any] = {"RoleName": name, "ReadOnly": bool(form.get("ReadOnly")),
                            "InvokeModels": bool(form.get("InvokeModels"))}
    if form.get("S3Access", "").strip():
        body["S3Access"] = form["S3Access"].strip()
    if form.get("AssumeRolePolicyDocument", "").strip():  # empty: the API's default, Bedrock may assume it
        body["AssumeRolePolicyDocument"] = form["AssumeRolePolicyDocument"]
    try:
        visit.call_json("iam", "CreateRole", body)
    except BedrockError as exc:
        return _after_failed_create(visit, exc, "role")
    return visit.redirect(f"iam/roles/{urllib.parse.quote(name, safe='')}")


# -- one user or role ---------------------------------------------------------------------------------------


@page("GET", f"iam/{KIND}/(?P<name>[^/]+)")
def principal(visit: Visit, kind: str, name: str) -> Response:
    editing = visit.query.get("policy", "")
    return _principal(visit, KINDS[kind], name, policy_name=editing)


def _principal(visit: Visit, kind: Kind, name: str, *, error: str = "", status: int = 200, policy_name: str = "",
               policy_document: str | None = None, new_key: dict[str, Any] | None = None) -> Response:
    """The page of one user or role: its inline policies, the policy form, and a user's access keys."""
    member = {kind.member: name}
    policies = visit.call_json("iam", f"Get{kind.noun}Policies", member)["Policies"]
    keys, keys_error = None, ""
    if kind.noun == "User":  # a user that does not exist answers ResourceNotFoundException here, as a page
        try:
            keys = visit.call_json("iam", "ListAccessKeys", member)["AccessKeyMetadata"]
        except AccessDeniedException as exc:  # the policies are still worth showing
            keys_error = f"{exc.code}: {exc.message}"
    elif not _role_exists(visit, name):
        return visit.render("message.html", "Not found", status=404, heading="NoSuchEntity",
                            message=f"There is no role named {name} in this account.")
    if policy_document is None:  # the form: a policy being edited, else a sample to start from
        policy_document = json.dumps(policies[policy_name], indent=2) if policy_name in policies else SAMPLE_POLICY
    arn = principal_arn(visit.principal.account_id, kind.noun.lower(), name)
    return visit.render(
        "iam_principal.html", f"{kind.noun} {name}", status=status, kind=kind, name=name, arn=arn,
        policies=[(n, json.dumps(policies[n], indent=2)) for n in sorted(policies)], keys=keys,
        keys_error=keys_error, error=error, policy_name=policy_name, policy_document=policy_document,
        new_key=new_key, own_key=visit.principal.access_key_id)


def _role_exists(visit: Visit, name: str) -> bool:
    """GetRolePolicies answers {} for a role that does not exist; ListRoles tells, where the caller may list."""
    try:
        roles = visit.call_json("iam", "ListRoles")["Roles"]
    except BedrockError:
        return True
    return any(_name_of(arn) == name for arn in roles)


def _failed(visit: Visit, kind: Kind, name: str, exc: BedrockError, **form: Any) -> Response:
    return _principal(visit, kind, name, error=f"{exc.code}: {exc.message}", status=exc.status, **form)


def _here(kind: Kind, name: str) -> str:
    return f"iam/{kind.path}/{urllib.parse.quote(name, safe='')}"


@page("POST", f"iam/{KIND}/(?P<name>[^/]+)/delete")
def delete_principal(visit: Visit, kind: str, name: str) -> Response:
    found = KINDS[kind]
    try:
        visit.call_json("iam", f"Delete{found.noun}", {found.member: name})
    except BedrockError as exc:
        return _failed(visit, found, name, exc)
    return visit.redirect("iam")


# -- inline policies ----------------------------------------------------------------------------------------


@page("POST", f"iam/{KIND}/(?P<name>[^/]+)/policies")
def put_policy(visit: Visit, kind: str, name: str) -> Response:
    found = KINDS[kind]
    policy_name = visit.form.get("PolicyName", "").strip()
    document = visit.form.get("PolicyDocument", "")
    # The text goes as it was typed: the API parses it, and its error (line, column) is the one to show.
    body = {found.member: name, "PolicyName": policy_name, "PolicyDocument": document}
    try:
        visit.call_json("iam", f"Put{found.noun}Policy", body)
    except BedrockError as exc:
        return _failed(visit, found, name, exc, policy_name=policy_name, policy_document=document)
    return visit.redirect(_here(found, name))


@page("POST", f"iam/{KIND}/(?P<name>[^/]+)/policies/(?P<policy>[^/]+)/delete")
def delete_policy(visit: Visit, kind: str, name: str, policy: str) -> Response:
    found = KINDS[kind]
    try:
        visit.call_json("iam", f"Delete{found.noun}Policy", {found.member: name, "PolicyName": policy})
    except BedrockError as exc:
        return _failed(visit, found, name, exc)
    return visit.redirect(_here(found, name))


# -- a user's access keys -----------------------------------------------------------------------------------

USERS = KINDS["users"]


@page("POST", "iam/users/(?P<name>[^/]+)/keys")
def create_key(visit: Visit, name: str) -> Response:
    body: dict[str, Any] = {"UserName": name}
    if visit.form.get("Bearer"):
        body["Bearer"] = True
    try:
        created = visit.call_json("iam", "CreateAccessKey", body)
    except BedrockError as exc:
        return _failed(visit, USERS, name, exc)
    # Rendered, not redirected: the secret must not travel in a URL, and no later page can show it again.
    return _principal(visit, USERS, name, new_key=created)


@page("POST", "iam/users/(?P<name>[^/]+)/keys/(?P<key>[^/]+)/status")
def update_key(visit: Visit, name: str, key: str) -> Response:
    body = {"UserName": name, "AccessKeyId": key, "Status": visit.form.get("Status", "")}
    try:
        visit.call_json("iam", "UpdateAccessKey", body)
    except BedrockError as exc:
        return _failed(visit, USERS, name, exc)
    return visit.redirect(_here(USERS, name))


@page("POST", "iam/users/(?P<name>[^/]+)/keys/(?P<key>[^/]+)/delete")
def delete_key(visit: Visit, name: str, key: str) -> Response:
    try:
        visit.call_json("iam", "DeleteAccessKey", {"UserName": name, "AccessKeyId": key})
    except BedrockError as exc:
        return _failed(visit, USERS, name, exc)
    return visit.redirect(_here(USERS, name))
