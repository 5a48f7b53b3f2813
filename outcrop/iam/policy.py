"""IAM policy documents: parsed with AWS-style errors, and evaluated the way IAM evaluates them.

A pure module (no database, no HTTP) so that every door can ask the same question the same way:
`evaluate()` for identity-based policies attached to the caller, `trusts()` for a role's trust
policy. Semantics follow IAM's documentation rather than intuition where the two differ:

- an explicit Deny anywhere wins over any Allow; nothing matching is an implicit deny;
- actions match case-insensitively, resources and condition values case-sensitively, and in
  both `*` and `?` are the only wildcards (they cross `:` and `/`);
- a condition on a key the request lacks is false, except that a negated operator
  (`StringNotEquals`, `NotIpAddress`, ...) is then true, `...IfExists` is then true, and `Null`
  tests for exactly that absence;
- policy variables (`${aws:username}`) are substituted only under Version 2012-10-17 (under
  2008-10-17, or with no Version, IAM reads them literally); a substituted value is always
  literal text, so a user named `*` cannot widen a resource pattern.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache, partial
from typing import Any, Literal

from outcrop.errors import ValidationException

#: AWS's limit for a managed policy, counted without whitespace outside strings.
MAX_POLICY_SIZE = 6144
VERSIONS = ("2012-10-17", "2008-10-17")
ASSUME_ROLE = "sts:AssumeRole"

_ACTION = re.compile(r"\*|[A-Za-z0-9*?-]+:[A-Za-z0-9*?_-]+")
_SID = re.compile(r"[A-Za-z0-9]*")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_BODY = re.compile(r"\s*([A-Za-z0-9_.:/-]+)\s*(?:,\s*'([^']*)'\s*)?")
_POLICY_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Principal", "NotPrincipal", "Condition"}
)
_PRINCIPAL_KEYS = frozenset({"AWS", "Service", "Federated", "CanonicalUser"})

#: A piece of a value after variable substitution: (text, wildcards_live).
Parts = tuple[tuple[str, bool], ...]


class MalformedPolicyDocumentException(ValidationException):
    """A policy that is not valid IAM policy grammar; the message names the element at fault."""

    status = 400


# --- wildcards and policy variables ---------------------------------------------------------------


def _translate(text: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)


@lru_cache(maxsize=4096)
def _regex(parts: Parts, ignore_case: bool) -> re.Pattern[str]:
    """One compiled matcher per distinct (resolved) pattern: policies are evaluated far more often than written."""
    source = "".join(_translate(text) if wild else re.escape(text) for text, wild in parts)
    return re.compile(source, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@lru_cache(maxsize=4096)
def _arn_regex(parts: Parts) -> re.Pattern[str]:
    """ArnLike/ArnEquals compare the six `:`-separated components one by one, so a wildcard in the
    first five stays inside its component; the sixth (the resource) takes the rest, colons included."""
    colons, out = 0, []
    for text, wild in parts:
        for c in text:
            if wild and c in "*?":
                any_char = "." if colons >= 5 else "[^:]"
                out.append(any_char + "*" if c == "*" else any_char)
            else:
                colons += c == ":"
                out.append(re.escape(c))
    return re.compile("".join(out), re.DOTALL)


@lru_cache(maxsize=4096)
def _segments(template: str, variables: bool) -> tuple[tuple[str, str, str | None], ...]:
    """Split a value into ("text" | "char" | "var", text_or_key, default); `${*}`, `${?}`, `${$}` are literal chars."""
    if not variables or "${" not in template:
        return (("text", template, None),)
    out: list[tuple[str, str, str | None]] = []
    pos = 0
    for match in _VARIABLE.finditer(template):
        if match.start() > pos:
            out.append(("text", template[pos : match.start()], None))
        body = match.group(1)
        if body in ("*", "?", "$"):
            out.append(("char", body, None))
        elif variable := _VARIABLE_BODY.fullmatch(body):
            out.append(("var", variable.group(1).lower(), variable.group(2)))
        else:  # not variable syntax: IAM leaves it as written
            out.append(("text", match.group(0), None))
        pos = match.end()
    if pos < len(template):
        out.append(("text", template[pos:], None))
    return tuple(out)


def _text(value: Any) -> str:
    """A context value as IAM sees it: JSON booleans are `true`/`false`, everything else its string form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


class _Context:
    """The request context with case-insensitive keys (IAM's keys are), plus the time keys AWS always sets."""

    def __init__(self, context: Mapping[str, Any] | None) -> None:
        self.values = {key.lower(): value for key, value in (context or {}).items()}
        now = dt.datetime.now(dt.UTC)
        self.values.setdefault("aws:currenttime", now)
        self.values.setdefault("aws:epochtime", int(now.timestamp()))

    def get(self, key: str) -> list[Any] | None:
        value = self.values.get(key.lower())
        if value is None:
            return None
        return list(value) if isinstance(value, list | tuple | set | frozenset) else [value]

    def resolve(self, template: str, variables: bool) -> Parts | None:
        """Substitute policy variables; None when one has neither a value nor a default (it matches nothing)."""
        parts: list[tuple[str, bool]] = []
        for kind, text, default in _segments(template, variables):
            if kind != "var":
                parts.append((text, kind == "text"))
                continue
            value = self.values.get(text)
            if value is None or isinstance(value, list | tuple | set | frozenset):
                value = default
            if value is None:
                return None
            parts.append((_text(value), False))
        return tuple(parts)


# --- condition operators ----------------------------------------------------------------------------


def _joined(parts: Parts) -> str:
    return "".join(text for text, _ in parts)


def _number(value: Any) -> Decimal | None:
    try:
        number = Decimal(_text(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _date(value: Any) -> dt.datetime | None:
    """ISO 8601 or epoch seconds, as IAM accepts; a naive time is UTC."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = _text(value).strip()
        try:
            if re.fullmatch(r"-?\d+(\.\d+)?", text):
                return dt.datetime.fromtimestamp(float(text), dt.UTC)
            moment = dt.datetime.fromisoformat(text)
        except (ValueError, OverflowError, OSError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(_text(value).strip())
    except ValueError:
        return None


def _compare(convert: Callable[[Any], Any], compare: Callable[[Any, Any], bool], parts: Parts, actual: Any) -> bool:
    left, right = convert(actual), convert(_joined(parts))
    return left is not None and right is not None and compare(left, right)


def _in_network(parts: Parts, actual: Any) -> bool:
    address = _ip(actual)
    return address is not None and address in ipaddress.ip_network(_joined(parts).strip(), strict=False)


def _arn_like(parts: Parts, actual: Any) -> bool:
    return _joined(parts) == "*" or _arn_regex(parts).fullmatch(_text(actual)) is not None


def _check_number(value: str) -> bool:
    return _number(value) is not None


def _check_bool(value: str) -> bool:
    return value.lower() in ("true", "false")


def _check_ip(value: str) -> bool:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Operator:
    test: Callable[[Parts, Any], bool]
    negated: bool = False
    #: Whether policy variables are substituted in this operator's values (IAM: string, ARN and Bool only).
    variables: bool = True
    #: Parse-time check of a policy value, and the noun the error message uses for it.
    check: Callable[[str], bool] | None = None
    kind: str = ""


_Test = Callable[[Parts, Any], bool]


def _family(prefix: str, tests: dict[str, _Test], negatable: Iterable[str], **options: Any) -> dict[str, _Operator]:
    """`prefix + name` for each test, plus `prefix + "Not" + name` (same test, result negated) where IAM has one."""
    ops = {prefix + name: _Operator(test, **options) for name, test in tests.items()}
    ops.update({f"{prefix}Not{name}": _Operator(tests[name], negated=True, **options) for name in negatable})
    return ops


_ORDER = {"Equals": operator.eq, "LessThan": operator.lt, "LessThanEquals": operator.le}
_ORDER |= {"GreaterThan": operator.gt, "GreaterThanEquals": operator.ge}
OPERATORS: dict[str, _Operator] = {
    **_family(
        "String",
        {
            "Equals": lambda parts, actual: _joined(parts) == _text(actual),
            "EqualsIgnoreCase": lambda parts, actual: _joined(parts).casefold() == _text(actual).casefold(),
            "Like": lambda parts, actual: _regex(parts, False).fullmatch(_text(actual)) is not None,
        },
        ("Equals", "EqualsIgnoreCase", "Like"),
    ),
    **_family(
        "Numeric",
        {name: partial(_compare, _number, compare) for name, compare in _ORDER.items()},
        ("Equals",),
        variables=False,
        check=_check_number,
        kind="number",
    ),
    **_family(
        "Date",
        {name: partial(_compare, _date, compare) for name, compare in _ORDER.items()},
        ("Equals",),
        variables=False,
        check=lambda value: _date(value) is not None,
        kind="date",
    ),
    "Bool": _Operator(
        lambda parts, actual: _joined(parts).lower() == _text(actual).lower(), check=_check_bool, kind="boolean"
    ),
    **_family("", {"IpAddress": _in_network}, ("IpAddress",), variables=False, check=_check_ip, kind="IP or CIDR"),
    **_family("Arn", {"Equals": _arn_like, "Like": _arn_like}, ("Equals", "Like")),
    # Null tests presence, not values, so Condition.holds decides it; this test is never called.
    "Null": _Operator(lambda parts, actual: False, variables=False, check=_check_bool, kind="boolean"),
}


# --- the document -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One `"Operator": {"key": values}` pair; values are OR-ed (NOR for a negated operator)."""

    operator: str  # without the IfExists suffix
    key: str
    values: tuple[str, ...]
    if_exists: bool = False

    def holds(self, context: _Context, variables: bool) -> bool:
        actual = context.get(self.key)
        if self.operator == "Null":
            return any((actual is None) == (value.lower() == "true") for value in self.values)
        spec = OPERATORS[self.operator]
        if actual is None:
            return self.if_exists or spec.negated
        matched = any(
            spec.test(parts, item)
            for value in self.values
            if (parts := context.resolve(value, variables and spec.variables)) is not None
            for item in actual
        )
        return matched != spec.negated


@dataclass(frozen=True)
class Statement:
    """One statement; `not_actions`/`not_resources` say the lists were written as NotAction/NotResource."""

    effect: Literal["Allow", "Deny"]
    actions: tuple[str, ...]
    #: None when the statement names no resource (a trust policy's statements don't).
    resources: tuple[str, ...] | None = None
    not_actions: bool = False
    not_resources: bool = False
    sid: str | None = None
    #: {"AWS": (...), "Service": (...)}; `"Principal": "*"` is {"*": ("*",)}. None in identity policies.
    principal: dict[str, tuple[str, ...]] | None = None
    conditions: tuple[Condition, ...] = ()

    def matches_action(self, action: str) -> bool:
        hit = any(_regex(((pattern, True),), True).fullmatch(action) for pattern in self.actions)
        return hit != self.not_actions

    def matches_resource(self, resource: str, context: _Context, variables: bool) -> bool:
        if self.resources is None:
            return False
        hit = any(
            _regex(parts, False).fullmatch(resource)
            for pattern in self.resources
            if (parts := context.resolve(pattern, variables)) is not None
        )
        return hit != self.not_resources

    def conditions_hold(self, context: _Context, variables: bool) -> bool:
        return all(condition.holds(context, variables) for condition in self.conditions)


@dataclass(frozen=True)
class Policy:
    """A parsed document; frozen so one parse can be shared by every request that evaluates it."""

    statements: tuple[Statement, ...]
    version: str | None = None
    id: str | None = None
    #: What a Decision names as the policy that matched (the caller's name for it, not part of the JSON).
    name: str = ""

    @property
    def substitutes_variables(self) -> bool:
        return self.version == "2012-10-17"


@dataclass(frozen=True)
class Decision:
    """The answer plus why, so that a denial can be explained the way AWS explains it."""

    allowed: bool
    reason: Literal["explicit deny", "allowed", "implicit deny"]
    #: The policy and statement that decided it; None for an implicit deny (nothing matched).
    policy_name: str | None = None
    statement: Statement | None = None

    @property
    def sid(self) -> str | None:
        return self.statement.sid if self.statement else None


# --- parsing ----------------------------------------------------------------------------------------


def _malformed(message: str) -> MalformedPolicyDocumentException:
    return MalformedPolicyDocumentException(message)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Reject duplicate keys: json would keep the last one, so `{"Effect": "Deny", "Effect": "Allow"}` would allow."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _malformed(f"Syntax errors in policy: duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise _malformed(f"Syntax errors in policy: {name} is not JSON")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise _malformed(f"{where} must be a string or a list of strings")
    if not value:
        raise _malformed(f"{where} must not be empty")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _malformed(f"{where}[{index}] must be a string")
    return tuple(value)


def _principal(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if value == "*":
        return {"*": ("*",)}
    if not isinstance(value, dict) or not value:
        raise _malformed(f'{where} must be "*" or an object such as {{"Service": "bedrock.amazonaws.com"}}')
    principal = {}
    for kind, names in value.items():
        if kind not in _PRINCIPAL_KEYS:
            raise _malformed(f"{where} has unknown principal type {kind!r}")
        principal[kind] = _strings(names, f"{where}.{kind}")
        for name in principal[kind]:
            if kind == "AWS" and not (name == "*" or re.fullmatch(r"\d{12}", name) or name.startswith("arn:")):
                raise _malformed(f"{where}.AWS {name!r} must be *, a 12-digit account id or an ARN")
            if kind == "Service" and (not name or "*" in name):
                raise _malformed(f"{where}.Service {name!r} must be a service principal such as bedrock.amazonaws.com")
    return principal


def _conditions(block: Any, where: str) -> tuple[Condition, ...]:
    if not isinstance(block, dict):
        raise _malformed(f"{where} must be an object of condition operators")
    conditions = []
    for written, keys in block.items():
        base, if_exists = (written[: -len("IfExists")], True) if written.endswith("IfExists") else (written, False)
        spec = OPERATORS.get(base)
        if spec is None or (base == "Null" and if_exists):
            raise _malformed(f"{where} has unknown operator {written!r}")
        if not isinstance(keys, dict) or not keys:
            raise _malformed(f"{where}.{written} must be an object of condition keys")
        for key, raw in keys.items():
            at = f"{where}.{written}.{key}"
            items = raw if isinstance(raw, list) else [raw]
            if not items:
                raise _malformed(f"{at} must not be empty")
            values = []
            for item in items:
                if item is None or not isinstance(item, str | int | float | bool):
                    raise _malformed(f"{at} values must be strings, numbers or booleans")
                values.append(_text(item))
                if spec.check is not None and not spec.check(values[-1]):
                    raise _malformed(f"{at} value {values[-1]!r} is not a valid {spec.kind}")
            conditions.append(Condition(base, key, tuple(values), if_exists))
    return tuple(conditions)


def _statement(raw: Any, where: str) -> Statement:
    if not isinstance(raw, dict):
        raise _malformed(f"{where} must be an object")
    for key in raw:
        if key not in _STATEMENT_KEYS:
            raise _malformed(f"{where} has unknown element {key!r}")
    if "NotPrincipal" in raw:
        raise _malformed(f"{where}.NotPrincipal is not supported")
    sid = raw.get("Sid")
    if sid is not None and not (isinstance(sid, str) and _SID.fullmatch(sid)):
        raise _malformed(f"{where}.Sid must be a string of letters and digits")
    if "Effect" not in raw:
        raise _malformed(f"{where}.Effect is required")
    effect = raw["Effect"]
    if effect not in ("Allow", "Deny"):
        raise _malformed(f"{where}.Effect must be Allow or Deny, not {json.dumps(effect)}")

    if ("Action" in raw) == ("NotAction" in raw):
        raise _malformed(f"{where} must have exactly one of Action or NotAction")
    action_key = "Action" if "Action" in raw else "NotAction"
    actions = _strings(raw[action_key], f"{where}.{action_key}")
    for index, action in enumerate(actions):
        if not _ACTION.fullmatch(action):
            at = f"{where}.{action_key}" + (f"[{index}]" if isinstance(raw[action_key], list) else "")
            raise _malformed(f"{at} must be * or service:Operation, not {action!r}")

    principal = _principal(raw["Principal"], f"{where}.Principal") if "Principal" in raw else None
    if "Resource" in raw and "NotResource" in raw:
        raise _malformed(f"{where} must not have both Resource and NotResource")
    resource_key = "Resource" if "Resource" in raw else "NotResource" if "NotResource" in raw else None
    resources = None
    if resource_key is None and principal is None:
        raise _malformed(f"{where} must have Resource or NotResource")
    if resource_key is not None:
        resources = _strings(raw[resource_key], f"{where}.{resource_key}")
        for index, resource in enumerate(resources):
            if resource != "*" and not resource.startswith("arn:"):
                at = f"{where}.{resource_key}" + (f"[{index}]" if isinstance(raw[resource_key], list) else "")
                raise _malformed(f"{at} must be * or an ARN, not {resource!r}")

    conditions = _conditions(raw["Condition"], f"{where}.Condition") if "Condition" in raw else ()
    return Statement(
        effect=effect,
        actions=actions,
        resources=resources,
        not_actions=action_key == "NotAction",
        not_resources=resource_key == "NotResource",
        sid=sid,
        principal=principal,
        conditions=conditions,
    )


def parse_policy(document: str | Mapping[str, Any], *, name: str = "", max_size: int = MAX_POLICY_SIZE) -> Policy:
    """Parse and validate a policy; every error is a MalformedPolicyDocumentException naming where it is.

    The size is counted as IAM counts it, without whitespace outside strings, so pretty-printing
    a document does not push it over the limit.
    """
    if isinstance(document, str):
        try:
            data = json.loads(document, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise _malformed(f"Syntax errors in policy: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise _malformed("Syntax errors in policy: nested too deeply") from None
    else:
        data = document
    if not isinstance(data, Mapping):
        raise _malformed("Policy document must be a JSON object")
    try:
        size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _malformed(f"Policy document is not JSON: {exc}") from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed("Policy document contains text that is not valid Unicode (an unpaired surrogate)") from None
    if size > max_size:
        raise _malformed(f"Cannot exceed quota for PolicySize: {max_size} (this document is {size} characters)")

    for key in data:
        if key not in _POLICY_KEYS:
            raise _malformed(f"Policy has unknown element {key!r}")
    version = data.get("Version")
    if version is not None and version not in VERSIONS:
        raise _malformed(f"Version must be 2012-10-17 or 2008-10-17, not {json.dumps(version)}")
    policy_id = data.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise _malformed("Id must be a string")
    if "Statement" not in data:
        raise _malformed("Statement is required")
    raw = data["Statement"]
    if isinstance(raw, dict):
        statements = (_statement(raw, "Statement"),)
    elif isinstance(raw, list) and raw:
        statements = tuple(_statement(item, f"Statement[{index}]") for index, item in enumerate(raw))
    else:
        raise _malformed("Statement must be an object or a non-empty list of objects")

    seen: dict[str, int] = {}
    for index, statement in enumerate(statements):
        if statement.sid:
            if statement.sid in seen:
                raise _malformed(
                    f"Statement[{index}].Sid {statement.sid!r} duplicates Statement[{seen[statement.sid]}]"
                )
            seen[statement.sid] = index
    return Policy(statements, version, policy_id, name)


# --- evaluation -------------------------------------------------------------------------------------


def evaluate(
    policies: Iterable[Policy], action: str, resource: str, context: Mapping[str, Any] | None = None
) -> Decision:
    """IAM's logic for identity-based policies: explicit Deny > Allow > implicit deny.

    The first matching Deny (in policy, then statement order) is reported; otherwise the first
    matching Allow. Principal elements are ignored here (the policies are the caller's own), and
    a statement without Resource/NotResource (a trust statement) matches no resource.
    """
    request = _Context(context)
    allow: Decision | None = None
    for policy in policies:
        variables = policy.substitutes_variables
        for statement in policy.statements:
            if not (
                statement.matches_action(action)
                and statement.matches_resource(resource, request, variables)
                and statement.conditions_hold(request, variables)
            ):
                continue
            if statement.effect == "Deny":
                return Decision(False, "explicit deny", policy.name, statement)
            if allow is None:
                allow = Decision(True, "allowed", policy.name, statement)
    return allow or Decision(False, "implicit deny")


def evaluate_resource_policy(
    policy: Policy, principal_arn: str, account_id: str, action: str, resource: str,
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """A resource-based policy (a bucket policy) for one caller: only statements whose Principal names the
    caller (its ARN, its account, or `*`) count; then Deny > Allow > implicit deny, as in `evaluate`."""
    mine = tuple(s for s in policy.statements
                 if s.principal is not None and _principal_matches(s.principal, None, principal_arn, account_id))
    return evaluate([Policy(mine, policy.version, policy.id, policy.name)], action, resource, context)


def _account_of(arn: str | None) -> str | None:
    parts = (arn or "").split(":", 5)
    return parts[4] if len(parts) == 6 and parts[0] == "arn" and parts[4] else None


def _principal_matches(
    principal: dict[str, tuple[str, ...]], service: str | None, principal_arn: str | None, account_id: str | None
) -> bool:
    """`*` is anyone; {"AWS": "*"} any AWS principal; an account id (or its :root ARN) anyone in that account."""
    if "*" in principal:
        return bool(service or principal_arn or account_id)
    if service and any(name.lower() == service.lower() for name in principal.get("Service", ())):
        return True
    for name in principal.get("AWS", ()):
        if name == "*" and (principal_arn or account_id):
            return True
        if principal_arn and name == principal_arn:
            return True
        if account_id and (name == account_id or re.fullmatch(rf"arn:[^:]+:iam::{account_id}:root", name)):
            return True
    return False


def trusts(
    policy: Policy,
    service: str | None = None,
    principal_arn: str | None = None,
    account_id: str | None = None,
    *,
    action: str = ASSUME_ROLE,
    context: Mapping[str, Any] | None = None,
) -> bool:
    """Whether a role's trust policy lets this service or principal assume it (no Deny, some Allow).

    `context` feeds conditions such as `aws:SourceAccount` / `aws:SourceArn` (Bedrock's own trust
    policies use them); aws:PrincipalArn, aws:PrincipalAccount and aws:PrincipalServiceName are
    filled in from the arguments when not given.
    """
    account_id = account_id or _account_of(principal_arn)
    values = dict(context or {})
    for key, value in (
        ("aws:PrincipalArn", principal_arn),
        ("aws:PrincipalAccount", account_id),
        ("aws:PrincipalServiceName", service),
    ):
        if value is not None and not any(existing.lower() == key.lower() for existing in values):
            values[key] = value
    request = _Context(values)
    variables = policy.substitutes_variables
    allowed = False
    for statement in policy.statements:
        if (
            statement.principal is not None
            and statement.matches_action(action)
            and _principal_matches(statement.principal, service, principal_arn, account_id)
            and statement.conditions_hold(request, variables)
        ):
            if statement.effect == "Deny":
                return False
            allowed = True
    return allowed


def access_denied_message(principal_arn: str, action: str, resource: str, decision: Decision) -> str:
    """The AccessDeniedException message AWS writes for an identity-policy denial, word for word."""
    head = f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource}"
    if decision.reason == "explicit deny":
        return f"{head} with an explicit deny in an identity-based policy"
    if decision.reason == "implicit deny":
        return f"{head} because no identity-based policy allows the {action} action"
    raise ValueError("an allowed decision has no access-denied message")
