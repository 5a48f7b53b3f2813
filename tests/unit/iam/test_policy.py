"""IAM policy documents and their evaluation, written as tables so the file reads as the spec.

Messages are compared in full: AWS clients and users match on the exact wording.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from outcrop.errors import ValidationException
from outcrop.iam.policy import (
    MAX_POLICY_SIZE,
    Decision,
    MalformedPolicyDocumentException,
    Policy,
    access_denied_message,
    evaluate,
    parse_policy,
    trusts,
)

ACCOUNT = "123456789012"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
MODEL = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
INVOKE = "bedrock:InvokeModel"


def policy(*statements: dict[str, Any], name: str = "test", version: str | None = "2012-10-17") -> Policy:
    document: dict[str, Any] = {"Statement": list(statements)}
    if version is not None:
        document["Version"] = version
    return parse_policy(json.dumps(document), name=name)


def allow(action: Any = "*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any = "*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def allowed(statement: dict[str, Any], action: str = INVOKE, resource: str = MODEL) -> bool:
    return evaluate([policy(statement)], action, resource).allowed


# --- actions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("bedrock:InvokeModel", "bedrock:InvokeModel", True),
        ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream", False),
        ("bedrock:*", "bedrock:InvokeModel", True),
        ("bedrock:*", "s3:GetObject", False),
        ("bedrock:Get*", "bedrock:GetFoundationModel", True),
        ("bedrock:Get*", "bedrock:ListFoundationModels", False),
        ("*", "s3:GetObject", True),
        ("s3:Get?bject", "s3:GetObject", True),
        ("s3:Get?bject", "s3:GetObbject", False),
        # Actions are case-insensitive on both sides.
        ("bedrock:invokemodel", "bedrock:InvokeModel", True),
        ("BEDROCK:InvokeModel", "bedrock:invokemodel", True),
        ("Bedrock:get*", "bedrock:GetFoundationModel", True),
    ],
)
def test_action_matching(pattern: str, action: str, expected: bool) -> None:
    assert allowed(allow(pattern), action=action) is expected


def test_action_list_matches_any_entry() -> None:
    statement = allow(["bedrock:ListFoundationModels", "bedrock:InvokeModel"])
    assert allowed(statement)
    assert not allowed(statement, action="bedrock:GetFoundationModel")


# --- resources --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("*", MODEL, True),
        (MODEL, MODEL, True),
        ("arn:aws:bedrock:us-east-1::foundation-model/*", MODEL, True),
        ("arn:aws:bedrock:*::foundation-model/anthropic.*", MODEL, True),
        # * crosses : and / as IAM's resource matching does.
        ("arn:aws:bedrock:*", MODEL, True),
        ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b/c.txt", True),
        ("arn:aws:s3:::bucket/*/c.txt", "arn:aws:s3:::bucket/a/b/c.txt", True),
        ("arn:aws:s3:::bucket/?", "arn:aws:s3:::bucket/a", True),
        ("arn:aws:s3:::bucket/?", "arn:aws:s3:::bucket/ab", False),
        ("arn:aws:s3:::bucket", "arn:aws:s3:::bucket/a", False),
        # Resources are case-sensitive.
        ("arn:aws:s3:::Bucket/*", "arn:aws:s3:::bucket/a", False),
        ("arn:aws:bedrock:us-east-1::foundation-model/*", "arn:aws:bedrock:us-west-2::foundation-model/x", False),
        # Only * and ? are special: regex syntax in a pattern is literal.
        ("arn:aws:s3:::b/a.c", "arn:aws:s3:::b/abc", False),
        ("arn:aws:s3:::b/[a]+", "arn:aws:s3:::b/aa", False),
        ("arn:aws:s3:::b/[a]+", "arn:aws:s3:::b/[a]+", True),
    ],
)
def test_resource_matching(pattern: str, resource: str, expected: bool) -> None:
    assert allowed(allow(INVOKE, pattern), resource=resource) is expected


# --- evaluation logic -------------------------------------------------------------------------------


def test_default_is_implicit_deny() -> None:
    decision = evaluate([], INVOKE, MODEL)
    assert decision == Decision(False, "implicit deny")
    assert decision.sid is None


def test_allow_reports_the_statement_that_allowed() -> None:
    decision = evaluate([policy(allow(INVOKE, Sid="Invoke"), name="BedrockUser")], INVOKE, MODEL)
    assert (decision.allowed, decision.reason, decision.policy_name, decision.sid) == (
        True,
        "allowed",
        "BedrockUser",
        "Invoke",
    )


def test_explicit_deny_in_one_policy_beats_allow_in_another() -> None:
    grants = policy(allow("bedrock:*", Sid="All"), name="BedrockFull")
    blocks = policy(deny(INVOKE, "arn:aws:bedrock:*::foundation-model/anthropic.*", Sid="NoClaude"), name="Guard")
    for order in ([grants, blocks], [blocks, grants]):
        decision = evaluate(order, INVOKE, MODEL)
        assert (decision.allowed, decision.reason, decision.policy_name, decision.sid) == (
            False,
            "explicit deny",
            "Guard",
            "NoClaude",
        )
    # The deny is scoped to Anthropic models: another model is still allowed by the other policy.
    other = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-text-express-v1"
    assert evaluate([grants, blocks], INVOKE, other).allowed


def test_multiple_statements_in_one_policy() -> None:
    document = policy(
        allow(["bedrock:List*", "bedrock:Get*"], Sid="Read"),
        allow(INVOKE, "arn:aws:bedrock:*::foundation-model/amazon.*", Sid="InvokeAmazon"),
        deny("bedrock:GetModelInvocationLoggingConfiguration", Sid="NoLogging"),
    )
    titan = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-text-express-v1"
    cases = [
        ("bedrock:ListFoundationModels", "*", "allowed", "Read"),
        (INVOKE, titan, "allowed", "InvokeAmazon"),
        (INVOKE, MODEL, "implicit deny", None),
        ("bedrock:GetModelInvocationLoggingConfiguration", "*", "explicit deny", "NoLogging"),
    ]
    for action, resource, reason, sid in cases:
        decision = evaluate([document], action, resource)
        assert (decision.reason, decision.sid) == (reason, sid), action


@pytest.mark.parametrize(
    ("statement", "action", "resource", "expected"),
    [
        # NotAction: everything except the listed actions.
        ({"Effect": "Allow", "NotAction": "bedrock:Delete*", "Resource": "*"}, INVOKE, MODEL, True),
        ({"Effect": "Allow", "NotAction": "bedrock:Delete*", "Resource": "*"}, "bedrock:DeleteGuardrail", "*", False),
        # NotResource: every resource except the listed ones.
        (
            {"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:bedrock:*::foundation-model/anthropic.*"},
            INVOKE,
            MODEL,
            False,
        ),
        (
            {"Effect": "Allow", "Action": "*", "NotResource": ["arn:aws:s3:::secret/*"]},
            INVOKE,
            MODEL,
            True,
        ),
    ],
)
def test_not_action_and_not_resource(statement: dict[str, Any], action: str, resource: str, expected: bool) -> None:
    assert allowed(statement, action=action, resource=resource) is expected


def test_deny_with_not_action_denies_everything_else() -> None:
    guard = policy({"Effect": "Deny", "NotAction": ["bedrock:Get*", "bedrock:List*"], "Resource": "*"})
    everything = policy(allow())
    assert evaluate([everything, guard], "bedrock:ListFoundationModels", "*").allowed
    assert evaluate([everything, guard], INVOKE, MODEL).reason == "explicit deny"


# --- conditions -------------------------------------------------------------------------------------

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        ({"StringEquals": {"aws:username": "alice"}}, {"aws:username": "alice"}, True),
        ({"StringEquals": {"aws:username": "alice"}}, {"aws:username": "Alice"}, False),
        ({"StringEquals": {"aws:username": ["bob", "alice"]}}, {"aws:username": "alice"}, True),  # values are OR-ed
        ({"StringEquals": {"aws:username": "alice"}}, {}, False),  # a missing key fails
        # Condition key names are case-insensitive.
        ({"StringEquals": {"AWS:UserName": "alice"}}, {"aws:username": "alice"}, True),
        ({"StringNotEquals": {"aws:username": "alice"}}, {"aws:username": "bob"}, True),
        ({"StringNotEquals": {"aws:username": ["bob", "alice"]}}, {"aws:username": "alice"}, False),  # NOR
        # IAM: a negated operator on a key the request lacks is true.
        ({"StringNotEquals": {"aws:username": "alice"}}, {}, True),
        ({"StringEqualsIgnoreCase": {"aws:username": "ALICE"}}, {"aws:username": "alice"}, True),
        ({"StringLike": {"s3:prefix": "home/alice/*"}}, {"s3:prefix": "home/alice/docs/a.txt"}, True),
        ({"StringLike": {"s3:prefix": "home/alice/*"}}, {"s3:prefix": "home/bob/"}, False),
        ({"StringNotLike": {"s3:prefix": "home/alice/*"}}, {"s3:prefix": "home/bob/"}, True),
        ({"StringNotLike": {"s3:prefix": "home/alice/*"}}, {"s3:prefix": "home/alice/x"}, False),
        # ...IfExists: true when the key is absent, the plain test when it is present.
        ({"StringEqualsIfExists": {"bedrock:GuardrailIdentifier": "g1"}}, {}, True),
        ({"StringEqualsIfExists": {"bedrock:GuardrailIdentifier": "g1"}}, {"bedrock:GuardrailIdentifier": "g1"}, True),
        ({"StringEqualsIfExists": {"bedrock:GuardrailIdentifier": "g1"}}, {"bedrock:GuardrailIdentifier": "g2"}, False),
        ({"NumericLessThanIfExists": {"bedrock:MaxTokens": "100"}}, {}, True),
        ({"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/*"}}, {"aws:PrincipalArn": ALICE}, True),
        ({"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/*"}}, {"aws:PrincipalArn": ALICE}, False),
        # ARN wildcards stay inside their component: * here cannot absorb the account's colon.
        ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam:*:user/alice"}}, {"aws:PrincipalArn": ALICE}, False),
        ({"ArnEquals": {"aws:PrincipalArn": ALICE}}, {"aws:PrincipalArn": ALICE}, True),
        ({"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:root"}}, {"aws:PrincipalArn": ALICE}, True),
        ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": True}, True),
        ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "false"}, False),
        ({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "true"}, True),
        ({"Bool": {"aws:SecureTransport": "false"}}, {}, False),
        ({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, {"aws:SourceIp": "203.0.113.7"}, True),
        ({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, {"aws:SourceIp": "203.0.114.7"}, False),
        ({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "203.0.113.7"]}}, {"aws:SourceIp": "203.0.113.7"}, True),
        ({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": "2001:db8::1"}, True),
        ({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": "203.0.113.7"}, False),
        ({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, {"aws:SourceIp": "not-an-ip"}, False),
        ({"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, {"aws:SourceIp": "198.51.100.1"}, True),
        ({"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, {"aws:SourceIp": "203.0.113.9"}, False),
        ({"NumericLessThan": {"bedrock:MaxTokens": "100"}}, {"bedrock:MaxTokens": 99}, True),
        ({"NumericLessThan": {"bedrock:MaxTokens": "100"}}, {"bedrock:MaxTokens": 100}, False),
        ({"NumericLessThanEquals": {"bedrock:MaxTokens": 100}}, {"bedrock:MaxTokens": "100"}, True),
        ({"NumericGreaterThan": {"bedrock:MaxTokens": "0.5"}}, {"bedrock:MaxTokens": 1}, True),
        ({"NumericGreaterThanEquals": {"bedrock:MaxTokens": "2"}}, {"bedrock:MaxTokens": 1}, False),
        ({"NumericEquals": {"bedrock:MaxTokens": "10"}}, {"bedrock:MaxTokens": "ten"}, False),
        ({"DateLessThan": {"aws:CurrentTime": "2026-12-31T23:59:59Z"}}, {"aws:CurrentTime": NOW}, True),
        ({"DateLessThan": {"aws:CurrentTime": "2025-12-31T23:59:59Z"}}, {"aws:CurrentTime": NOW}, False),
        ({"DateGreaterThan": {"aws:CurrentTime": "2026-01-01"}}, {"aws:CurrentTime": "2026-01-15T12:00:00Z"}, True),
        ({"DateGreaterThan": {"aws:CurrentTime": "1767225600"}}, {"aws:CurrentTime": NOW}, True),  # epoch seconds
        # aws:CurrentTime is always in the request context, as on AWS.
        ({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}, {}, True),
        ({"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}, {}, False),
        ({"Null": {"aws:TokenIssueTime": "true"}}, {}, True),
        ({"Null": {"aws:TokenIssueTime": "true"}}, {"aws:TokenIssueTime": "2026-01-01T00:00:00Z"}, False),
        ({"Null": {"aws:TokenIssueTime": "false"}}, {"aws:TokenIssueTime": "2026-01-01T00:00:00Z"}, True),
        # A multi-valued context key matches when any of its values does.
        ({"StringEquals": {"aws:TagKeys": "team"}}, {"aws:TagKeys": ["owner", "team"]}, True),
        # Keys under one operator, and operators in one block, are AND-ed.
        (
            {"StringEquals": {"aws:username": "alice", "aws:PrincipalAccount": ACCOUNT}},
            {"aws:username": "alice", "aws:PrincipalAccount": "999999999999"},
            False,
        ),
        (
            {"StringEquals": {"aws:username": "alice"}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            {"aws:username": "alice", "aws:SourceIp": "10.1.2.3"},
            True,
        ),
        (
            {"StringEquals": {"aws:username": "alice"}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            {"aws:username": "alice", "aws:SourceIp": "192.168.0.1"},
            False,
        ),
    ],
)
def test_condition_operators(condition: dict[str, Any], context: dict[str, Any], expected: bool) -> None:
    assert evaluate([policy(allow(INVOKE, Condition=condition))], INVOKE, MODEL, context).allowed is expected


def test_conditional_deny_applies_only_when_its_condition_holds() -> None:
    guard = policy(deny(Condition={"Bool": {"aws:SecureTransport": "false"}}, Sid="TlsOnly"), name="Tls")
    grants = policy(allow())
    assert evaluate([grants, guard], INVOKE, MODEL, {"aws:SecureTransport": True}).allowed
    assert evaluate([grants, guard], INVOKE, MODEL, {"aws:SecureTransport": False}).reason == "explicit deny"


# --- policy variables -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "resource", "context", "expected"),
    [
        (allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"), "arn:aws:s3:::home/alice/a.txt", {}, False),
        (
            allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"),
            "arn:aws:s3:::home/alice/a.txt",
            {"aws:username": "alice"},
            True,
        ),
        (
            allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"),
            "arn:aws:s3:::home/bob/a.txt",
            {"aws:username": "alice"},
            False,
        ),
        # A substituted value is literal: a user named * does not get everyone's files.
        (
            allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"),
            "arn:aws:s3:::home/bob/a.txt",
            {"aws:username": "*"},
            False,
        ),
        # A default applies when the key is missing; ${*} is a literal asterisk.
        (
            allow("s3:*", "arn:aws:s3:::home/${aws:username, 'guest'}/*"),
            "arn:aws:s3:::home/guest/a.txt",
            {},
            True,
        ),
        (allow("s3:*", "arn:aws:s3:::stars/${*}"), "arn:aws:s3:::stars/*", {}, True),
        (allow("s3:*", "arn:aws:s3:::stars/${*}"), "arn:aws:s3:::stars/x", {}, False),
        (
            allow(INVOKE, "arn:aws:bedrock:us-east-1:${aws:PrincipalAccount}:provisioned-model/*"),
            f"arn:aws:bedrock:us-east-1:{ACCOUNT}:provisioned-model/pm1",
            {"aws:PrincipalAccount": ACCOUNT},
            True,
        ),
        (
            allow(INVOKE, Condition={"StringLike": {"s3:prefix": "home/${aws:username}/*"}}),
            MODEL,
            {"aws:username": "alice", "s3:prefix": "home/alice/x"},
            True,
        ),
        (
            allow(
                INVOKE,
                Condition={"StringEquals": {"aws:PrincipalArn": "arn:aws:iam::${aws:PrincipalAccount}:user/alice"}},
            ),
            MODEL,
            {"aws:PrincipalArn": ALICE, "aws:PrincipalAccount": ACCOUNT},
            True,
        ),
    ],
)
def test_policy_variables(statement: dict[str, Any], resource: str, context: dict[str, Any], expected: bool) -> None:
    assert evaluate([policy(statement)], statement["Action"], resource, context).allowed is expected


def test_policy_variables_are_literal_under_version_2008() -> None:
    statement = allow("s3:*", "arn:aws:s3:::home/${aws:username}/*")
    context = {"aws:username": "alice"}
    for version in ("2008-10-17", None):
        old = policy(statement, version=version)
        assert not evaluate([old], "s3:GetObject", "arn:aws:s3:::home/alice/a", context).allowed
        assert evaluate([old], "s3:GetObject", "arn:aws:s3:::home/${aws:username}/a", context).allowed


# --- malformed documents ----------------------------------------------------------------------------

GOOD = {"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"}


def statements(*items: Any) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(items)})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{", "Syntax errors in policy: Expecting property name enclosed in double quotes at line 1 column 2"),
        ('{"Statement": [}', "Syntax errors in policy: Expecting value at line 1 column 16"),
        (
            '{"Statement": {"Effect": "Deny", "Effect": "Allow", "Action": "*", "Resource": "*"}}',
            "Syntax errors in policy: duplicate key 'Effect'",
        ),
        ("[]", "Policy document must be a JSON object"),
        ('{"Version": "2012-10-17"}', "Statement is required"),
        ('{"Version": "2012-10-17", "Statement": []}', "Statement must be an object or a non-empty list of objects"),
        ('{"Version": "2012-10-18", "Statement": []}', 'Version must be 2012-10-17 or 2008-10-17, not "2012-10-18"'),
        ('{"Statment": []}', "Policy has unknown element 'Statment'"),
        (statements(GOOD, "Allow"), "Statement[1] must be an object"),
        (statements(GOOD, {"Action": "*", "Resource": "*"}), "Statement[1].Effect is required"),
        (statements(GOOD, {**GOOD, "Effect": "allow "}), 'Statement[1].Effect must be Allow or Deny, not "allow "'),
        (statements({**GOOD, "Effect": "allow"}), 'Statement[0].Effect must be Allow or Deny, not "allow"'),
        (
            json.dumps({"Statement": {**GOOD, "Effect": "Permit"}}),
            'Statement.Effect must be Allow or Deny, not "Permit"',
        ),
        (statements({**GOOD, "Action": 7}), "Statement[0].Action must be a string or a list of strings"),
        (statements({**GOOD, "Action": {"a": "b"}}), "Statement[0].Action must be a string or a list of strings"),
        (statements({**GOOD, "Action": ["bedrock:Get*", 7]}), "Statement[0].Action[1] must be a string"),
        (statements({**GOOD, "Action": []}), "Statement[0].Action must not be empty"),
        (
            statements({**GOOD, "Action": ["bedrock:Get*", "bedrock"]}),
            "Statement[0].Action[1] must be * or service:Operation, not 'bedrock'",
        ),
        (
            statements({**GOOD, "Action": "bedrock:Invoke.*"}),
            "Statement[0].Action must be * or service:Operation, not 'bedrock:Invoke.*'",
        ),
        (
            statements({"Effect": "Allow", "Resource": "*"}),
            "Statement[0] must have exactly one of Action or NotAction",
        ),
        (
            statements({**GOOD, "NotAction": "s3:*"}),
            "Statement[0] must have exactly one of Action or NotAction",
        ),
        (statements({"Effect": "Allow", "Action": "*"}), "Statement[0] must have Resource or NotResource"),
        (
            statements({**GOOD, "NotResource": "arn:aws:s3:::b"}),
            "Statement[0] must not have both Resource and NotResource",
        ),
        (statements({**GOOD, "Resource": "bucket"}), "Statement[0].Resource must be * or an ARN, not 'bucket'"),
        (statements({**GOOD, "Actions": "*"}), "Statement[0] has unknown element 'Actions'"),
        (statements({**GOOD, "Sid": "has space"}), "Statement[0].Sid must be a string of letters and digits"),
        (
            statements({**GOOD, "Sid": "A"}, {**GOOD, "Sid": "B"}, {**GOOD, "Sid": "A"}),
            "Statement[2].Sid 'A' duplicates Statement[0]",
        ),
        (
            statements(GOOD, {**GOOD, "Condition": {"StringEqual": {"aws:username": "alice"}}}),
            "Statement[1].Condition has unknown operator 'StringEqual'",
        ),
        (
            statements({**GOOD, "Condition": {"ForAnyValue:StringLike": {"aws:TagKeys": "a*"}}}),
            "Statement[0].Condition has unknown operator 'ForAnyValue:StringLike'",
        ),
        (
            statements({**GOOD, "Condition": {"NullIfExists": {"aws:username": "true"}}}),
            "Statement[0].Condition has unknown operator 'NullIfExists'",
        ),
        (
            statements({**GOOD, "Condition": {"StringEquals": "alice"}}),
            "Statement[0].Condition.StringEquals must be an object of condition keys",
        ),
        (
            statements({**GOOD, "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}}}),
            "Statement[0].Condition.IpAddress.aws:SourceIp value '10.0.0.300/8' is not a valid IP or CIDR",
        ),
        (
            statements({**GOOD, "Condition": {"NumericLessThan": {"bedrock:MaxTokens": "many"}}}),
            "Statement[0].Condition.NumericLessThan.bedrock:MaxTokens value 'many' is not a valid number",
        ),
        (
            statements({**GOOD, "Condition": {"DateLessThan": {"aws:CurrentTime": "tomorrow"}}}),
            "Statement[0].Condition.DateLessThan.aws:CurrentTime value 'tomorrow' is not a valid date",
        ),
        (
            statements({**GOOD, "Condition": {"Bool": {"aws:SecureTransport": "yes"}}}),
            "Statement[0].Condition.Bool.aws:SecureTransport value 'yes' is not a valid boolean",
        ),
        (
            statements({**GOOD, "Condition": {"StringEquals": {"aws:username": None}}}),
            "Statement[0].Condition.StringEquals.aws:username values must be strings, numbers or booleans",
        ),
        (
            statements({**GOOD, "Principal": {"Services": "bedrock.amazonaws.com"}}),
            "Statement[0].Principal has unknown principal type 'Services'",
        ),
        (
            statements({**GOOD, "Principal": {"AWS": "alice"}}),
            "Statement[0].Principal.AWS 'alice' must be *, a 12-digit account id or an ARN",
        ),
        (
            statements({**GOOD, "NotPrincipal": {"AWS": "*"}}),
            "Statement[0].NotPrincipal is not supported",
        ),
    ],
)
def test_malformed_documents(document: str, message: str) -> None:
    with pytest.raises(MalformedPolicyDocumentException) as caught:
        parse_policy(document)
    assert caught.value.message == message
    assert isinstance(caught.value, ValidationException)
    assert (caught.value.status, caught.value.code) == (400, "MalformedPolicyDocumentException")


def test_size_limit_ignores_whitespace_and_can_be_raised() -> None:
    def document(padding: int) -> dict[str, Any]:
        return {"Statement": {**GOOD, "Sid": "x" * padding}}

    compact = len(json.dumps(document(0), separators=(",", ":")))
    at_limit = document(MAX_POLICY_SIZE - compact)
    parse_policy(json.dumps(at_limit, indent=4))  # pretty-printing does not count against the limit
    parse_policy(at_limit)  # a dict is measured the same way

    over = document(MAX_POLICY_SIZE - compact + 1)
    with pytest.raises(MalformedPolicyDocumentException) as caught:
        parse_policy(json.dumps(over))
    assert caught.value.message == "Cannot exceed quota for PolicySize: 6144 (this document is 6145 characters)"
    assert parse_policy(json.dumps(over), max_size=10240).statements[0].sid == over["Statement"]["Sid"]


def test_parse_accepts_single_statement_dict_and_missing_version() -> None:
    parsed = parse_policy({"Statement": GOOD}, name="inline")
    assert (parsed.version, parsed.name, len(parsed.statements)) == (None, "inline", 1)
    statement = parsed.statements[0]
    assert (statement.effect, statement.actions, statement.resources) == ("Allow", ("bedrock:*",), ("*",))


# --- trust policies ---------------------------------------------------------------------------------

BEDROCK_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "AmazonBedrockTrust",
            "Effect": "Allow",
            "Principal": {"Service": "bedrock.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@pytest.mark.parametrize(
    ("principal", "kwargs", "expected"),
    [
        ({"Service": "bedrock.amazonaws.com"}, {"service": "bedrock.amazonaws.com"}, True),
        ({"Service": ["lambda.amazonaws.com", "bedrock.amazonaws.com"]}, {"service": "bedrock.amazonaws.com"}, True),
        ({"Service": "bedrock.amazonaws.com"}, {"service": "sagemaker.amazonaws.com"}, False),
        ({"Service": "bedrock.amazonaws.com"}, {"principal_arn": ALICE}, False),
        ({"Service": "bedrock.amazonaws.com"}, {}, False),
        ({"AWS": ALICE}, {"principal_arn": ALICE}, True),
        ({"AWS": ALICE}, {"principal_arn": f"arn:aws:iam::{ACCOUNT}:user/bob"}, False),
        # An account (id or :root ARN) trusts every principal in that account.
        ({"AWS": ACCOUNT}, {"principal_arn": ALICE}, True),
        ({"AWS": ACCOUNT}, {"account_id": ACCOUNT}, True),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, {"principal_arn": ALICE}, True),
        ({"AWS": ACCOUNT}, {"principal_arn": "arn:aws:iam::999999999999:user/alice"}, False),
        ({"AWS": "*"}, {"principal_arn": ALICE}, True),
        ({"AWS": "*"}, {"service": "bedrock.amazonaws.com"}, False),
        ("*", {"service": "bedrock.amazonaws.com"}, True),
        ("*", {"principal_arn": ALICE}, True),
    ],
)
def test_trust_principals(principal: Any, kwargs: dict[str, str], expected: bool) -> None:
    document = {"Statement": {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}}
    assert trusts(parse_policy(document), **kwargs) is expected


def test_bedrock_trust_policy() -> None:
    trust = parse_policy(BEDROCK_TRUST)
    assert trusts(trust, service="bedrock.amazonaws.com")
    assert not trusts(trust, service="bedrock.amazonaws.com", action="sts:TagSession")
    # A trust policy grants nothing as an identity policy: its statements name no resource.
    assert not evaluate([trust], "sts:AssumeRole", "*").allowed


def test_trust_conditions_and_deny() -> None:
    statement = BEDROCK_TRUST["Statement"][0]
    conditioned = {
        "Statement": {
            **statement,
            "Condition": {
                "StringEquals": {"aws:SourceAccount": ACCOUNT},
                "ArnLike": {"aws:SourceArn": f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-customization-job/*"},
            },
        }
    }
    trust = parse_policy(conditioned)
    job = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-customization-job/abc"
    assert trusts(trust, service="bedrock.amazonaws.com", context={"aws:SourceAccount": ACCOUNT, "aws:SourceArn": job})
    assert not trusts(trust, service="bedrock.amazonaws.com", context={"aws:SourceAccount": "999999999999"})
    assert not trusts(trust, service="bedrock.amazonaws.com")  # the conditions' keys are missing

    denied = {"Statement": [statement, {**statement, "Sid": "NoBedrock", "Effect": "Deny"}]}
    assert not trusts(parse_policy(denied), service="bedrock.amazonaws.com")


# --- AccessDenied messages --------------------------------------------------------------------------


def test_access_denied_messages_match_aws() -> None:
    implicit = evaluate([], INVOKE, "arn:aws:bedrock:us-east-1::foundation-model/x")
    explicit = evaluate([policy(deny(INVOKE))], INVOKE, "arn:aws:bedrock:us-east-1::foundation-model/x")
    resource = "arn:aws:bedrock:us-east-1::foundation-model/x"
    assert access_denied_message(ALICE, INVOKE, resource, implicit) == (
        "User: arn:aws:iam::123456789012:user/alice is not authorized to perform: bedrock:InvokeModel"
        " on resource: arn:aws:bedrock:us-east-1::foundation-model/x"
        " because no identity-based policy allows the bedrock:InvokeModel action"
    )
    assert access_denied_message(ALICE, INVOKE, resource, explicit) == (
        "User: arn:aws:iam::123456789012:user/alice is not authorized to perform: bedrock:InvokeModel"
        " on resource: arn:aws:bedrock:us-east-1::foundation-model/x"
        " with an explicit deny in an identity-based policy"
    )
    with pytest.raises(ValueError):
        access_denied_message(ALICE, INVOKE, resource, evaluate([policy(allow())], INVOKE, resource))
