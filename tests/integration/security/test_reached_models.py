"""A model denied by IAM stays denied when it is reached through a provisioned throughput made on it."""

from __future__ import annotations

import json
import time

from tests.integration.security.helpers import QUESTION, error_code


def _iam(server, action: str, **body) -> dict:
    status, _, answer = server.raw("POST", f"/_outcrop/iam/{action}", json.dumps(body).encode())
    assert status == 200, answer
    return answer


def test_a_denied_model_stays_denied_through_a_provisioned_throughput(server, tiny_model):
    denied = f"arn:aws:bedrock:us-east-1::foundation-model/{tiny_model}"
    policy = {"Version": "2012-10-17", "Statement": [  # everything of Bedrock, except invoking the tiny model
        {"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "bedrock:InvokeModel*", "Resource": denied}]}
    _iam(server, "CreateUser", UserName="trent")
    _iam(server, "PutUserPolicy", UserName="trent", PolicyName="no-tiny", PolicyDocument=json.dumps(policy))
    key = _iam(server, "CreateAccessKey", UserName="trent")
    trent = (key["AccessKeyId"], key["SecretAccessKey"])
    bedrock = server.client("bedrock", key=trent)
    # Making a throughput is allowed (it is not an invocation) ...
    arn = bedrock.create_provisioned_model_throughput(modelUnits=1, provisionedModelName="around-the-deny",
                                                      modelId=tiny_model)["provisionedModelArn"]
    try:
        deadline = time.monotonic() + 120
        while (status := bedrock.get_provisioned_model_throughput(provisionedModelId=arn)["status"]) == "Creating":
            assert time.monotonic() < deadline, "the throughput never left Creating"
            time.sleep(0.2)
        assert status == "InService"
        # ... but invoking the model through it is not: its ARN is authorized with the model's beneath it.
        runtime = server.client("bedrock-runtime", key=trent, read_timeout=120)
        for call in (lambda: runtime.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 2}),
                     lambda: runtime.invoke_model(modelId=arn, body=json.dumps({"inputText": "hi"}))):
            code, _, message = error_code(call)
            assert code == "AccessDeniedException" and denied in message
        # Whoever may invoke the throughput is answered through it: as on Bedrock, an Allow on the provisioned
        # model's ARN is enough (the model beneath needs none, only no Deny).
        scoped = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "bedrock:InvokeModel*",
                                                          "Resource": arn}]}
        _iam(server, "CreateUser", UserName="ursula")
        _iam(server, "PutUserPolicy", UserName="ursula", PolicyName="one-throughput", PolicyDocument=json.dumps(scoped))
        key = _iam(server, "CreateAccessKey", UserName="ursula")
        ursula = server.client("bedrock-runtime", key=(key["AccessKeyId"], key["SecretAccessKey"]), read_timeout=120)
        answer = ursula.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 2})
        assert answer["stopReason"] in ("max_tokens", "end_turn")
        code, _, _ = error_code(lambda: ursula.converse(modelId=tiny_model, messages=QUESTION))
        assert code == "AccessDeniedException"  # the model itself, named directly, is not hers
    finally:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
