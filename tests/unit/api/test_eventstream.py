"""The event-stream encoder against botocore's own decoder, frame by frame and the way boto3 parses it."""

import json

import botocore.session
import pytest
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.parsers import create_parser

from outcrop.api.bedrock.protocol import encode_event_stream
from outcrop.api.eventstream import encode_event, encode_exception, encode_message
from outcrop.errors import ModelErrorException, ThrottlingException

# -- frame level -------------------------------------------------------------------------------


def decode(data: bytes, piece: int | None = None) -> list:
    """All messages botocore finds in `data`, fed to it whole or `piece` bytes at a time."""
    buffer, messages = EventStreamBuffer(), []
    for start in range(0, len(data), piece or max(len(data), 1)):
        buffer.add_data(data[start:start + (piece or len(data))])
        messages.extend(buffer)
    assert buffer._data == b"", "bytes left over after the last whole message"
    return messages


def test_headers_payload_and_lengths_decode():
    data = encode_message({":message-type": "event", ":event-type": "chunk"}, b'{"a": 1}')
    [message] = decode(data)
    assert message.headers == {":message-type": "event", ":event-type": "chunk"}
    assert message.payload == b'{"a": 1}'
    assert message.prelude.total_length == len(data)


def test_empty_payload_and_no_headers():
    [message] = decode(encode_message({":message-type": "event"}, b""))
    assert message.headers == {":message-type": "event"} and message.payload == b""
    data = encode_message({}, b"")
    assert len(data) == 16
    [message] = decode(data)
    assert message.headers == {} and message.payload == b""


def test_unicode_header_values_and_payload():
    payload = "héllo wörld, 你好, 🪨".encode()
    [message] = decode(encode_message({":event-type": "naïve-🪨", "x-名前": "値"}, payload))
    assert message.headers == {":event-type": "naïve-🪨", "x-名前": "値"}
    assert message.payload.decode() == "héllo wörld, 你好, 🪨"


def test_one_megabyte_payload():
    payload = bytes(range(256)) * 4096
    assert len(payload) == 1024 * 1024
    [message] = decode(encode_message({":message-type": "event"}, payload), piece=65536)
    assert message.payload == payload


def test_concatenated_messages_split_at_every_byte_boundary():
    stream = b"".join([
        encode_event("messageStart", {"role": "assistant"}),
        encode_message({":message-type": "event"}, b""),
        encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "é"}}),
        encode_exception("throttlingException", "slow down"),
    ])
    expected = [(m.headers, m.payload) for m in decode(stream)]
    assert [h.get(":event-type", h.get(":exception-type")) for h, _ in expected] == [
        "messageStart", None, "contentBlockDelta", "throttlingException"]
    for cut in range(1, len(stream)):
        buffer, found = EventStreamBuffer(), []
        for part in (stream[:cut], stream[cut:]):
            buffer.add_data(part)
            found.extend((m.headers, m.payload) for m in buffer)
        assert found == expected, cut
    for piece in (1, 3, 7, 13, 64):
        assert [(m.headers, m.payload) for m in decode(stream, piece)] == expected


def test_every_single_byte_flip_fails_a_crc():
    data = encode_message({":message-type": "event", ":event-type": "chunk"}, b'{"bytes": "aGk="}')
    for position in range(len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x01
        with pytest.raises(ChecksumMismatch):
            decode(bytes(corrupt))


# -- operation level: what a boto3 user iterates -----------------------------------------------


class FakeRawResponse:
    """Enough of a urllib3 response for botocore's EventStream: `.stream()` yields byte chunks."""

    def __init__(self, chunks, piece: int = 5):
        self._data = b"".join(chunks)
        self._piece = piece

    def stream(self):
        for start in range(0, len(self._data), self._piece):
            yield self._data[start:start + self._piece]


def run_stream(operation: str, events, piece: int = 5) -> EventStream:
    """Encode `events` for the operation's union, then parse the bytes exactly as boto3 does.

    boto3 hands the whole HTTP response to the protocol's parser; for an event-stream payload that
    parser builds `EventStream(raw, union, <its EventStreamJSONParser>, operation)`. (Passing the
    rest-json parser itself to EventStream would be wrong: every event parses to `{"ResponseMetadata": {}}`.)
    """
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    output = model.operation_model(operation).output_shape
    member = output.serialization["payload"]
    raw = FakeRawResponse(encode_event_stream(output.members[member], events), piece)
    response = {"status_code": 200, "headers": {"content-type": "application/vnd.amazon.eventstream"},
                "body": raw, "context": {"operation_name": operation}}
    parsed = create_parser("rest-json").parse(response, output)
    stream = parsed[member]
    assert isinstance(stream, EventStream) and stream._operation_name == operation
    return stream


CONVERSE_EVENTS = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "a"}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "bé"}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "c 🪨"}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("messageStop", {"stopReason": "end_turn"}),
    ("metadata", {"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10},
                  "metrics": {"latencyMs": 42}}),
]


def test_payload_members_are_event_stream_unions():
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    for operation, member in (("ConverseStream", "stream"), ("InvokeModelWithResponseStream", "body")):
        output = model.operation_model(operation).output_shape
        assert output.serialization["payload"] == member
        assert output.members[member].serialization.get("eventstream")


def test_converse_stream_decodes_as_boto3_sees_it():
    assert list(run_stream("ConverseStream", CONVERSE_EVENTS)) == [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "a"}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": "bé"}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": "c 🪨"}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10},
                      "metrics": {"latencyMs": 42}}},
    ]


def test_invoke_model_with_response_stream_chunks_round_trip_their_bytes():
    raw = [b'{"generation": "hi"}', json.dumps({"generation": " th\u00e9re", "stop_reason": "stop"}).encode()]
    decoded = list(run_stream("InvokeModelWithResponseStream", [("chunk", {"bytes": b}) for b in raw], piece=1))
    assert decoded == [{"chunk": {"bytes": b}} for b in raw]
    assert json.loads(decoded[0]["chunk"]["bytes"]) == {"generation": "hi"}


def test_chunk_payload_is_base64_json_on_the_wire():
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    union = model.operation_model("InvokeModelWithResponseStream").output_shape.members["body"]
    [message] = decode(b"".join(encode_event_stream(union, [("chunk", {"bytes": b'{"generation": "hi"}'})])))
    assert message.headers == {":message-type": "event", ":event-type": "chunk",
                               ":content-type": "application/json"}
    assert json.loads(message.payload) == {"bytes": "eyJnZW5lcmF0aW9uIjogImhpIn0="}


# -- errors mid-stream -------------------------------------------------------------------------


def two_deltas_then(error: Exception):
    yield CONVERSE_EVENTS[1]
    yield CONVERSE_EVENTS[2]
    raise error


@pytest.mark.parametrize(("operation", "error", "code", "message"), [
    ("ConverseStream", ThrottlingException("slow down"), "throttlingException", "slow down"),
    ("ConverseStream", ModelErrorException("model broke"), "modelStreamErrorException", "model broke"),
    ("ConverseStream", RuntimeError("secret path /etc/x"), "internalServerException",
     "Internal error while streaming"),
    ("InvokeModelWithResponseStream", ThrottlingException("slow down"), "throttlingException", "slow down"),
])
def test_error_mid_stream_raises_event_stream_error_after_the_deltas(operation, error, code, message):
    def events():
        if operation == "ConverseStream":
            yield from two_deltas_then(error)
        else:
            yield "chunk", {"bytes": b'{"generation": "a"}'}
            yield "chunk", {"bytes": b'{"generation": "b"}'}
            raise error

    seen = []
    with pytest.raises(EventStreamError) as caught:
        for event in run_stream(operation, events()):
            seen.append(event)
    assert len(seen) == 2
    if operation == "ConverseStream":
        assert seen[1] == {"contentBlockDelta": {"delta": {"text": "bé"}, "contentBlockIndex": 0}}
    else:
        assert seen[1] == {"chunk": {"bytes": b'{"generation": "b"}'}}
    assert caught.value.response["Error"] == {"Code": code, "Message": message}
    assert "secret" not in str(caught.value)


def test_exception_message_headers_on_the_wire():
    [message] = decode(encode_exception("throttlingException", "slow down"))
    assert message.headers == {":message-type": "exception", ":exception-type": "throttlingException",
                               ":content-type": "application/json"}
    assert json.loads(message.payload) == {"message": "slow down"}


def test_model_error_in_an_agent_stream_keeps_a_code_and_message():
    model = botocore.session.get_session().get_service_model("bedrock-agent-runtime")
    output = model.operation_model("InvokeAgent").output_shape
    union = output.members[output.serialization["payload"]]
    assert "modelStreamErrorException" not in union.members

    def events():
        yield "chunk", {"bytes": b"hi"}
        raise ModelErrorException("model broke")

    response = {"status_code": 200, "headers": {}, "body": FakeRawResponse(encode_event_stream(union, events())),
                "context": {"operation_name": "InvokeAgent"}}
    stream = create_parser("rest-json").parse(response, output)[output.serialization["payload"]]
    with pytest.raises(EventStreamError) as caught:
        list(stream)
    assert caught.value.response["Error"]["Code"] in union.members
    assert caught.value.response["Error"]["Message"] == "model broke"
