"""A small Python helper for applications: record feedback, conversions and revenue, fetch the report.

    runtime = boto3.client("bedrock-runtime", endpoint_url="http://127.0.0.1:8600")
    response = runtime.converse(modelId=..., messages=..., requestMetadata={"userId": "u1", "sessionId": "s1"})
    insights = InsightsClient.from_boto3(runtime)
    insights.record_feedback(response["ResponseMetadata"]["RequestId"], thumbs="up")

Requests are signed with botocore's own SigV4 signer (service name `bedrock`, as every Outcrop door
expects), so the same credentials that call bedrock-runtime record the events. An error answer is
raised as the `outcrop.errors` exception of the same name (ResourceNotFoundException, ...).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop import errors

SIGNING_NAME = "bedrock"
PREFIX = "/_outcrop/insights/"


class InsightsClient:
    def __init__(self, endpoint_url: str, credentials: Credentials, region: str = "us-east-1",
                 timeout: float = 30.0, verify: bool | str = True) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.credentials, self.region, self.timeout = credentials, region, timeout
        if verify is False:
            self._ssl = ssl._create_unverified_context()
        elif isinstance(verify, str):
            self._ssl = ssl.create_default_context(cafile=verify)
        else:
            self._ssl = None

    @classmethod
    def from_boto3(cls, client: Any, **options: Any) -> InsightsClient:
        """The endpoint, region and credentials of an existing boto3 client (bedrock or bedrock-runtime)."""
        # botocore exposes no public accessor for a client's credentials; its signer has held them as
        # `_credentials` for as long as botocore has had `_request_signer`.
        credentials = client._request_signer._credentials
        if credentials is None:
            raise ValueError(
                "The insights API needs SigV4 credentials (an access key), and this boto3 client has none: it "
                "authenticates with a bearer API key (AWS_BEARER_TOKEN_BEDROCK), which Outcrop accepts for "
                "bedrock and bedrock-runtime only. Give the client an access key, or pass one to "
                "InsightsClient(endpoint_url, botocore.credentials.Credentials(key_id, secret)).")
        credentials = credentials.get_frozen_credentials()
        return cls(client.meta.endpoint_url, Credentials(*credentials), client.meta.region_name, **options)

    def _call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.endpoint_url + PREFIX + action
        data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
        request = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
        SigV4Auth(self.credentials, SIGNING_NAME, self.region).add_auth(request)
        prepared = urllib.request.Request(url, data=data, method="POST", headers=dict(request.headers.items()))
        try:
            with urllib.request.urlopen(prepared, timeout=self.timeout, context=self._ssl) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                answer = json.loads(raw)
                code, message = answer["__type"], answer["message"]
            except (ValueError, KeyError, TypeError):
                raise errors.InternalServerException(f"HTTP {error.code}: {raw[:200]!r}") from None
            kind = getattr(errors, code, None)
            if not (isinstance(kind, type) and issubclass(kind, errors.BedrockError)):
                kind = errors.BedrockError
            raise kind(message) from None

    def record_feedback(self, request_id: str, *, thumbs: str | None = None, rating: int | None = None,
                        comment: str | None = None) -> dict[str, Any]:
        """Thumbs 'up' or 'down' and/or a 1-5 rating on the response with this request id."""
        return self._call("RecordFeedback", {"requestId": request_id, "thumbs": thumbs, "rating": rating,
                                             "comment": comment})

    def record_conversion(self, name: str, *, user_id: str | None = None, session_id: str | None = None,
                          value: float | None = None, request_id: str | None = None) -> dict[str, Any]:
        """A named outcome (a purchase, a sign-up) for a user or session, with an optional value."""
        return self._call("RecordConversion", {"name": name, "userId": user_id, "sessionId": session_id,
                                               "value": value, "requestId": request_id})

    def record_revenue(self, user_id: str, amount: float) -> dict[str, Any]:
        return self._call("RecordRevenue", {"userId": user_id, "amount": amount})

    def report(self, since: str | None = None, until: str | None = None, by: str | None = None) -> dict[str, Any]:
        """The report of the caller's account; `since` is a duration back from now (7d) or an ISO time."""
        return self._call("GetReport", {"since": since, "until": until, "groupBy": by})
