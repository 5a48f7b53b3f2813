"""Routing and (de)serialization against botocore's own models."""

from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from outcrop.api.bedrock import protocol
from outcrop.errors import SerializationException, ValidationException

ARN = "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-8b-instruct-v1:0"


def test_every_operation_of_the_four_services_has_a_route():
    names = {(r.service, r.name) for r in protocol.routes()}
    assert ("bedrock", "ListFoundationModels") in names
    assert ("bedrock-runtime", "ConverseStream") in names
    assert ("bedrock-agent-runtime", "InvokeAgent") in names
    assert len(names) > 250


def test_percent_encoded_arn_stays_one_label():
    route, labels = protocol.match_route("POST", f"/model/{quote(ARN, safe='')}/converse")
    assert (route.service, route.name) == ("bedrock-runtime", "Converse")
    assert labels == {"modelId": ARN}


def test_literal_segments_beat_labels_and_methods_matter():
    route, _ = protocol.match_route("GET", "/foundation-models")
    assert route.name == "ListFoundationModels"
    route, labels = protocol.match_route("GET", "/foundation-models/x.y")
    assert route.name == "GetFoundationModel" and labels == {"modelIdentifier": "x.y"}
    # bedrock-agent: the same collection path creates with PUT and lists with POST.
    assert protocol.match_route("PUT", "/knowledgebases/")[0].name == "CreateKnowledgeBase"
    assert protocol.match_route("POST", "/knowledgebases/")[0].name == "ListKnowledgeBases"
    assert protocol.match_route("DELETE", "/foundation-models") is None


def test_query_strings_are_coerced_and_validated():
    route, labels = protocol.match_route("GET", "/model-customization-jobs")
    params = protocol.parse_request(route, labels, "maxResults=5&sortOrder=Ascending", {}, b"")
    assert params == {"maxResults": 5, "sortOrder": "Ascending"}
    with pytest.raises(ValidationException, match="maxResults"):
        protocol.parse_request(route, labels, "maxResults=many", {}, b"")


def test_raw_blob_payload_and_headers():
    route, labels = protocol.match_route("POST", "/model/m.x/invoke")
    params = protocol.parse_request(route, labels, "", {"content-type": "application/json"}, b'{"prompt":"hi"}')
    assert params["body"] == b'{"prompt":"hi"}' and params["contentType"] == "application/json"


def test_malformed_json_is_a_serialization_exception():
    route, labels = protocol.match_route("POST", "/model/m.x/converse")
    with pytest.raises(SerializationException):
        protocol.parse_request(route, labels, "", {}, b"{nope")


def test_serialize_output_timestamps_and_headers():
    route, _ = protocol.match_route("POST", "/model/m.x/invoke")
    wire = protocol.serialize_response(route, {"body": b"{}", "contentType": "application/json"})
    assert wire.body == b"{}" and wire.headers["Content-Type"] == "application/json"
    route, _ = protocol.match_route("GET", "/custom-models/abc")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    wire = protocol.serialize_response(route, {"modelArn": "a", "creationTime": when, "unknownExtra": None})
    assert b'"creationTime": "2026-01-02T03:04:05Z"' in wire.body and b"unknownExtra" not in wire.body


def test_document_members_pass_through_untouched():
    route, labels = protocol.match_route("POST", "/model/m.x/converse")
    body = b'{"messages": [], "additionalModelRequestFields": {"top_k": 1, "nested": {"a": [1, 2]}}}'
    params = protocol.parse_request(route, labels, "", {}, body)
    assert params["additionalModelRequestFields"] == {"top_k": 1, "nested": {"a": [1, 2]}}


def test_a_create_that_loses_a_race_for_its_name_is_a_conflict(tmp_path):
    """Two servers check a name at once, both see it free, the database's unique index refuses the second row: its
    caller hears ConflictException, as for a name in use, not an internal error."""
    import sqlalchemy as sa

    from outcrop.api.app import lost_race
    from outcrop.errors import ConflictException

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'race.db'}")
    table = sa.Table("things", sa.MetaData(), sa.Column("name", sa.String, unique=True))
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(table.insert().values(name="twin"))
    with pytest.raises(sa.exc.IntegrityError) as caught, engine.begin() as connection:
        connection.execute(table.insert().values(name="twin"))
    assert isinstance(lost_race(caught.value, "CreateGuardrail"), ConflictException)
    assert lost_race(caught.value, "GetGuardrail") is caught.value  # elsewhere it is a bug, not a race
    child = sa.Table("children", table.metadata, sa.Column("name", sa.String, nullable=False))
    child.create(engine)
    with pytest.raises(sa.exc.IntegrityError) as missing, engine.begin() as connection:
        connection.execute(child.insert().values(name=None))
    assert lost_race(missing.value, "CreateGuardrail") is missing.value  # NOT NULL: no race, a bug
    engine.dispose()
