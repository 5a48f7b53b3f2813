"""The IAM pages: users and roles, inline policies, a user's access keys, and what a policy stops."""

from __future__ import annotations

import html
import json
import re

from tests.unit.console.conftest import Browser

READ_CATALOG = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels"], "Resource": "*"}]}


def _text(page) -> str:
    return html.unescape(page.body)


def test_create_a_user_give_it_a_policy_then_delete_both(root, services):
    account = services.iam.default_account()
    made = root.post("iam/users", {"UserName": "alice"})
    assert made.status == 303 and made.location == "/console/iam/users/alice"
    listed = root.get("iam")
    assert 'href="/console/iam/users/alice"' in listed.body and f"arn:aws:iam::{account}:user/alice" in listed.body
    assert "None: this user may do nothing yet." in root.get("iam/users/alice").body
    put = root.post("iam/users/alice/policies", {"PolicyName": "catalog", "PolicyDocument": json.dumps(READ_CATALOG)})
    assert put.status == 303 and put.location == "/console/iam/users/alice"
    page = root.get("iam/users/alice")
    shown = re.search(r'<pre class="code">(.*?)</pre>', page.body, re.S)
    assert shown and json.loads(html.unescape(shown.group(1))) == READ_CATALOG
    assert '"Action": [\n        "bedrock:ListFoundationModels"' in html.unescape(shown.group(1))  # pretty
    editing = root.get("iam/users/alice?policy=catalog")
    assert 'value="catalog"' in editing.body and json.loads(
        _text(editing).split('name="PolicyDocument"', 1)[1].split(">", 1)[1].split("</textarea>")[0]) == READ_CATALOG
    assert root.post("iam/users/alice/policies/catalog/delete").status == 303
    assert services.iam.policy_documents(f"arn:aws:iam::{account}:user/alice") == {}
    gone = root.post("iam/users/alice/delete")
    assert gone.status == 303 and gone.location == "/console/iam"
    assert "user/alice" not in root.get("iam").body
    missing = root.get("iam/users/alice")
    assert missing.status == 404 and "ResourceNotFoundException" in missing.body


def test_a_bad_policy_shows_the_apis_error_and_keeps_the_text(root):
    root.post("iam/users", {"UserName": "bob"})
    broken = root.post("iam/users/bob/policies", {"PolicyName": "p", "PolicyDocument": '{"Version": "2012-10-17",'})
    assert broken.status == 400
    assert broken.errors()[0].startswith("MalformedPolicyDocumentException: Syntax errors in policy")
    assert "{&#34;Version&#34;: &#34;2012-10-17&#34;,</textarea>" in broken.body  # back to fix
    wrong = root.post("iam/users/bob/policies", {"PolicyName": "p", "PolicyDocument": '{"Version": "2012-10-17"}'})
    assert wrong.status == 400 and wrong.errors() == ["MalformedPolicyDocumentException: Statement is required"]
    bad_name = root.post("iam/users", {"UserName": "no spaces"})
    assert bad_name.status == 400 and bad_name.errors()[0].startswith("ValidationException: User name 'no spaces'")


def test_an_access_key_is_shown_once_works_can_be_deactivated_and_deleted(root, app):
    root.post("iam/users", {"UserName": "carol"})
    root.post("iam/users/carol/policies", {"PolicyName": "catalog", "PolicyDocument": json.dumps(READ_CATALOG)})
    made = root.post("iam/users/carol/keys")
    assert made.status == 200 and "location" not in made.headers  # rendered, so the secret is in no URL
    assert "only time it is shown" in made.body
    key_id = re.search(r"Access key id</dt><dd><code>(AKIA\w+)</code>", made.body).group(1)
    secret = html.unescape(re.search(r"Secret access key</dt><dd><code>([^<]+)</code>", made.body).group(1))
    assert made.headers["cache-control"] == "no-store"
    later = root.get("iam/users/carol")
    assert key_id in later.body and secret not in _text(later)
    carol = Browser(app)
    carol.sign_in(key_id, secret)  # the key shown is the key that works
    assert carol.get("models").status == 200
    off = root.post(f"iam/users/carol/keys/{key_id}/status", {"Status": "Inactive"})
    assert off.status == 303 and off.location == "/console/iam/users/carol"
    assert '<span class="status Inactive">Inactive</span>' in root.get("iam/users/carol").body
    assert carol.get("models").location == "/console/sign-in"  # a deactivated key ends its sessions
    bad = root.post(f"iam/users/carol/keys/{key_id}/status", {"Status": "Sleeping"})
    assert bad.status == 400 and bad.errors() == ["ValidationException: status must be Active or Inactive"]
    assert root.post(f"iam/users/carol/keys/{key_id}/delete").status == 303
    assert key_id not in root.get("iam/users/carol").body
    again = root.post(f"iam/users/carol/keys/{key_id}/delete")
    assert again.status == 404 and "does not exist" in again.errors()[0]


def test_a_bedrock_api_key_is_shown_once_too(root):
    root.post("iam/users", {"UserName": "dave"})
    made = root.post("iam/users/dave/keys", {"Bearer": "1"})
    assert made.status == 200 and re.search(r"<code>ABSK[\w+/=]+</code>", made.body)
    assert "Bedrock API key" in root.get("iam/users/dave").body


def test_a_role_with_model_access_and_its_errors(root, services):
    made = root.post("iam/roles", {"RoleName": "evaluator", "InvokeModels": "1"})
    assert made.status == 303 and made.location == "/console/iam/roles/evaluator"
    page = root.get("iam/roles/evaluator")
    assert page.status == 200 and "<h3>invoke-models</h3>" in page.body and "bedrock:InvokeModel" in page.body
    assert "Access keys" not in page.body  # roles are assumed, never keyed
    assert 'href="/console/iam/roles/evaluator"' in root.get("iam").body
    nobucket = root.post("iam/roles", {"RoleName": "trainer", "S3Access": "s3://nobody-has-this/data"})
    assert nobucket.status == 403 and nobucket.errors()[0].startswith("AccessDeniedException: ")
    assert 'value="s3://nobody-has-this/data"' in nobucket.body
    trust = root.post("iam/roles", {"RoleName": "trainer", "AssumeRolePolicyDocument": "[]"})
    assert trust.status == 400 and trust.errors()[0].startswith("MalformedPolicyDocumentException: ")
    assert root.get("iam/roles/nobody").status == 404
    assert root.post("iam/roles/evaluator/delete").location == "/console/iam"
    assert "role/evaluator" not in root.get("iam").body


def test_a_user_without_iam_permissions_is_denied_in_the_apis_words(user_browser):
    reader = user_browser("reader", READ_CATALOG)
    denied = reader.get("iam")
    assert denied.status == 403 and "iam:ListUsers" in denied.body
    create = reader.post("iam/users", {"UserName": "mallory"})
    assert create.status == 403 and "iam:CreateUser" in create.errors()[0]
    assert "You may not list this account" in create.body
    own = reader.get("iam/users/reader")
    assert own.status == 403 and "iam:GetUserPolicies" in own.body
