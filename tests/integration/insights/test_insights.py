"""Insights end to end: a Converse call with requestMetadata, its usage record, events through the JSON API
(signed by the Python helper), and the report row, from the API and from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from botocore.credentials import Credentials

from outcrop import errors
from outcrop.insights.client import InsightsClient

QUESTION = [{"role": "user", "content": [{"text": "recommend a book"}]}]


def test_converse_to_report_row(server, runtime, tiny_model):
    domain, user, session = f"books-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    response = runtime.converse(modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 4},
                                requestMetadata={"userId": user, "sessionId": session, "domain": domain})
    request_id = response["ResponseMetadata"]["RequestId"]
    insights = InsightsClient.from_boto3(runtime)

    recorded = insights.record_feedback(request_id, thumbs="up", rating=5, comment="spot on")
    assert recorded["requestId"] == request_id and recorded["modelId"] == tiny_model
    assert insights.record_conversion("purchase", request_id=request_id, value=12.5)["sessionId"] == session
    insights.record_revenue(user, 12.5)

    report = insights.report(since="1h", by="domain")
    row = next(g for g in report["groups"] if g["key"] == domain)
    assert row["requests"] == 1 and row["errors"] == 0
    assert row["inputTokens"] == response["usage"]["inputTokens"]
    assert row["outputTokens"] == response["usage"]["outputTokens"]
    assert row["satisfaction"] == {"responses": 1, "thumbsUp": 1, "thumbsDown": 0, "thumbsUpRate": 1.0,
                                   "ratings": 1, "meanRating": 5.0, "csat": 1.0}
    assert row["arpu"] == {"activeUsers": 1, "revenue": 12.5, "arpu": 12.5}
    assert row["conversion"]["sessions"] == 1 and row["conversion"]["conversionRate"] == 1.0
    latency = row["efficiency"]["latencyMs"]
    assert latency["p50"] is not None and latency["p50"] <= latency["p95"] <= latency["p99"]
    assert row["efficiency"]["cost"] > 0 and report["bill"]["total"] >= row["efficiency"]["cost"]

    # the CLI reads the same database and prints the same row
    result = subprocess.run([sys.executable, "-m", "outcrop", "insights", "report", "--since", "1h", "--by",
                             "domain", "--json", "--data-dir", str(server.data_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # one JSON line per account with activity (other tests of the session use a second account)
    [from_cli] = [report for report in map(json.loads, result.stdout.splitlines())
                  if any(g["key"] == domain for g in report["groups"])]
    assert next(g for g in from_cli["groups"] if g["key"] == domain)["satisfaction"] == row["satisfaction"]


def test_feedback_on_an_unknown_request_id_is_refused(server, runtime):
    insights = InsightsClient.from_boto3(runtime)
    with pytest.raises(errors.ResourceNotFoundException, match="not-a-request-id"):
        insights.record_feedback("not-a-request-id", thumbs="up")
    with pytest.raises(errors.ValidationException, match="rating"):
        insights.record_feedback("not-a-request-id", rating=9)
    status, headers, body = server.raw("POST", "/_outcrop/insights/RecordFeedback",
                                       json.dumps({"requestId": "not-a-request-id", "thumbs": "up"}).encode())
    assert status == 404 and headers["x-amzn-ErrorType"] == body["__type"] == "ResourceNotFoundException"
    status, _, body = server.raw("POST", "/_outcrop/insights/NoSuchAction", b"{}")
    assert status == 404 and body["__type"] == "UnknownOperationException"
    status, _, body = server.raw("POST", "/_outcrop/insights/GetReport", b"{}", sign=False)
    assert status == 403


def test_actions_are_authorized_by_iam(server, runtime):
    name = f"app-{uuid.uuid4().hex[:8]}"
    assert server.raw("POST", "/_outcrop/iam/CreateUser", json.dumps({"UserName": name}).encode())[0] == 200
    _, _, key = server.raw("POST", "/_outcrop/iam/CreateAccessKey", json.dumps({"UserName": name}).encode())
    user_key = (key["AccessKeyId"], key["SecretAccessKey"])
    insights = InsightsClient(server.endpoint, Credentials(*user_key))
    with pytest.raises(errors.AccessDeniedException, match="outcrop:GetReport"):
        insights.report()
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "outcrop:GetReport",
                                                      "Resource": "*"}]}
    assert server.raw("POST", "/_outcrop/iam/PutUserPolicy", json.dumps(
        {"UserName": name, "PolicyName": "insights", "PolicyDocument": policy}).encode())[0] == 200
    assert len(insights.report(since="5m")["accountId"]) == 12
    with pytest.raises(errors.AccessDeniedException, match="outcrop:RecordRevenue"):
        insights.record_revenue("u1", 1.0)
