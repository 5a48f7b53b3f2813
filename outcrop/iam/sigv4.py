"""Verifying AWS Signature Version 4 on the server side.

The canonical request is built by botocore's own signer from the request exactly as it arrived (raw
path, raw query, the headers the client listed as signed), so our canonicalization cannot drift from
what boto3 and the AWS CLI compute; only the comparison, the scope checks and the clock rule are ours.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from outcrop.errors import InvalidSignatureException, MissingAuthenticationTokenException

ALGORITHM = "AWS4-HMAC-SHA256"
SIGNING_NAME = "bedrock"
#: AWS refuses a signature whose time is more than 15 minutes from the server's clock.
MAX_CLOCK_SKEW = timedelta(minutes=15)
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: S3 lets a client sign without its body; the Bedrock services do not. boto3 and the AWS CLI never send
#: UNSIGNED-PAYLOAD to them: botocore signs every payload over HTTP, and over HTTPS too unless an operation's
#: model says `v4-unsigned-body`/`unsignedPayload`, which no bedrock* operation does (botocore.auth
#: `_should_sha256_sign_payload`, botocore.handlers `set_operation_specific_signer`).
UNSIGNED_PAYLOAD_REFUSED = ("X-Amz-Content-SHA256: UNSIGNED-PAYLOAD is not accepted: a signed request must cover its "
                            "body, else the body could be changed in transit. Sign the body's SHA-256 instead.")
_FIELD = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


#: HTTP/2's pseudo-header for the host. The JS SDK v3 over HTTP/2 signs it instead of `host`.
AUTHORITY = ":authority"


class _SignedHeadersOnly(SigV4Auth):
    """botocore's signer, canonicalizing exactly the headers the client listed as signed.

    Its own `headers_to_sign` adds `host` when missing and skips a few names (user-agent, expect): right
    for a client choosing what to sign, wrong for a server checking what was signed. Over HTTP/2 the JS
    SDK signs `:authority` and no `host`, so adding `host` would change the canonical request."""

    def headers_to_sign(self, request):
        signed = HTTPHeaders()
        for name, value in request.headers.items():
            signed[name.lower()] = value
        return signed


@dataclass(frozen=True)
class Authorization:
    access_key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(header: str) -> Authorization:
    if not header.startswith(ALGORITHM + " "):
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    fields = dict(_FIELD.findall(header[len(ALGORITHM):]))
    try:
        key_id, date, region, service, terminator = fields["Credential"].split("/")
        signed = tuple(fields["SignedHeaders"].split(";"))
        signature = fields["Signature"]
    except (KeyError, ValueError):
        raise InvalidSignatureException(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters "
            "(Credential=KEY/DATE/REGION/SERVICE/aws4_request).") from None
    if not _SIGNATURE.fullmatch(signature):
        raise InvalidSignatureException("Signature must be 64 lowercase hexadecimal characters.")
    if terminator != "aws4_request":
        raise InvalidSignatureException("Credential should be scoped with a valid terminator: 'aws4_request'.")
    return Authorization(key_id, date, region, service, signed, signature)


def verify(auth: Authorization, secret: str, *, method: str, raw_path: str, query: str,
           headers: dict[str, str], body: bytes, now: datetime | None = None) -> None:
    """Raise InvalidSignatureException unless the request is signed by `secret`, in time, for bedrock."""
    if auth.service != SIGNING_NAME:
        raise InvalidSignatureException(
            f"Credential should be scoped to correct service: '{SIGNING_NAME}'.")
    if "host" not in auth.signed_headers and AUTHORITY not in auth.signed_headers:
        raise InvalidSignatureException("'Host' must be a signed header.")
    if AUTHORITY in auth.signed_headers and AUTHORITY not in headers and "host" in headers:
        # The HTTP server hands an HTTP/2 request's :authority to the app as its Host header.
        headers = {**headers, AUTHORITY: headers["host"]}
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidSignatureException(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.") from None
    if amz_date[:8] != auth.date:
        raise InvalidSignatureException(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{auth.date}' != '{amz_date[:8]}'")
    now = now or datetime.now(UTC)
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        stamp = "%Y%m%dT%H%M%SZ"
        if signed_at < now:
            detail = f"{amz_date} is now earlier than {(now - MAX_CLOCK_SKEW).strftime(stamp)}"
        else:
            detail = f"{amz_date} is now later than {(now + MAX_CLOCK_SKEW).strftime(stamp)}"
        raise InvalidSignatureException(f"Signature expired: {detail} ({now.strftime(stamp)} - 15 min.)")

    missing = [h for h in auth.signed_headers if h not in headers]
    if missing:
        raise InvalidSignatureException(f"Signed header(s) missing from the request: {', '.join(missing)}")
    content_hash = headers.get("x-amz-content-sha256")
    if content_hash == UNSIGNED_PAYLOAD:  # the signature would not cover the body: anyone on the path could change it
        raise InvalidSignatureException(UNSIGNED_PAYLOAD_REFUSED)
    if content_hash and "x-amz-content-sha256" in auth.signed_headers \
            and not (_SHA256.fullmatch(content_hash)
                     and hmac.compare_digest(content_hash, hashlib.sha256(body).hexdigest())):
        raise InvalidSignatureException("The provided 'x-amz-content-sha256' header does not match what was computed.")

    host = headers["host"] if "host" in headers else headers[AUTHORITY]
    url = f"http://{host}{raw_path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body,
                         headers={name: headers[name] for name in auth.signed_headers})
    request.context["timestamp"] = amz_date
    signer = _SignedHeadersOnly(Credentials(auth.access_key_id, secret), auth.service, auth.region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, auth.signature):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.")
