"""Batch inference's files: input records (and every way a line can fail to be one), output lines, the manifest,
and the journal a restarted job resumes from."""

from __future__ import annotations

import json

import pytest

from outcrop.batch import records
from outcrop.batch.journal import Finished, Journal
from outcrop.batch.records import Counts, Malformed, Record

GOOD = {"recordId": "CALL0000001", "modelInput": {"prompt": "Hi", "max_gen_len": 5}}


def parse(*lines: str | bytes) -> list[Record | Malformed]:
    return list(records.parse_lines(list(lines), file=2))


def test_a_record_keeps_its_place_id_and_input():
    [record] = parse(json.dumps(GOOD))
    assert record == Record(2, 1, "CALL0000001", {"prompt": "Hi", "max_gen_len": 5})
    assert record.key == "2:1"


@pytest.mark.parametrize("line, record_id, message", [
    ('{"recordId": "a", "modelInput": ', None, "Line 1: the record is not valid JSON: "),
    ('[1, 2]', None, "Line 1: a record must be a JSON object"),
    ('{"recordId": "", "modelInput": {}}', None, "Line 1: recordId must be a non-empty string"),
    ('{"recordId": 7, "modelInput": {}}', None, "Line 1: recordId must be a non-empty string"),
    (json.dumps({"recordId": "x" * 257, "modelInput": {}}), "x" * 257, "longer than 256"),
    ('{"recordId": "a"}', "a", "Line 1: the record has no modelInput"),
    ('{"recordId": "a", "modelInput": "Hi"}', "a", "modelInput must be a JSON object"),
    ('{"recordId": "a", "modelInput": {}, "extra": 1}', "a", "unknown member extra"),
    ('{"recordId": "a", "modelInput": {"prompt": "\\ud800"}}', None, "not valid JSON"),
])
def test_each_malformed_line_is_named_with_its_line(line, record_id, message):
    [bad] = parse(line)
    assert isinstance(bad, Malformed) and bad.line == 1 and bad.record_id == record_id
    assert message in bad.message
    out = bad.output()
    assert out["error"] == {"errorCode": 400, "errorMessage": bad.message}
    assert out["recordId"] == record_id and "modelInput" in out


def test_a_record_without_a_record_id_gets_one_as_on_bedrock():
    [record] = parse('{"modelInput": {"prompt": "x"}}', '{"modelInput": {"prompt": "y"}}')[1:]
    assert record.record_id == "00200000002" and len(record.record_id) == 11
    assert parse('{"modelInput": {"prompt": "x"}}')[0].record_id == "00200000001"


def test_blank_lines_are_skipped_but_counted_and_a_repeated_record_id_is_malformed():
    items = parse(json.dumps(GOOD), "", "   ", json.dumps(GOOD), b"\xff\xfe", json.dumps({**GOOD, "recordId": "b"}))
    assert [type(i).__name__ for i in items] == ["Record", "Malformed", "Malformed", "Record"]
    assert [i.line for i in items] == [1, 4, 5, 6]
    assert items[1].message == "Line 4: recordId CALL0000001 is also the recordId of line 1"
    assert items[2].message.startswith("Line 5: the record is not UTF-8 text")
    assert items[2].model_input is None


def test_a_line_that_is_not_json_keeps_its_text_as_model_input():
    [bad] = parse("not json at all")
    assert bad.output()["modelInput"] == "not json at all"


def test_output_lines_and_names():
    record = Record(0, 1, "r1", {"prompt": "é"})
    line = records.success_line(record, {"generation": "ok"})
    assert line == {"recordId": "r1", "modelInput": {"prompt": "é"}, "modelOutput": {"generation": "ok"}}
    assert records.dumps(line) == '{"recordId":"r1","modelInput":{"prompt":"é"},"modelOutput":{"generation":"ok"}}'
    assert records.output_name("data/part-1.jsonl") == "data/part-1.jsonl.out"
    assert records.MANIFEST_NAME == "manifest.json.out"


def test_the_manifest_counts_successes_errors_and_the_tokens_of_successes():
    counts = Counts(total=4)
    counts.add({"modelOutput": {}}, 10, 3)
    counts.add({"modelOutput": {}}, 5, 2)
    counts.add(records.error_line("x", {}, 400, "bad"), 99, 99)
    assert counts.manifest() == {"totalRecordCount": 4, "processedRecordCount": 3, "successRecordCount": 2,
                                 "errorRecordCount": 1, "inputTokenCount": 15, "outputTokenCount": 5}


def _records(n: int, file: int = 0) -> list[Record]:
    return [Record(file, i + 1, f"r{i}", {"prompt": f"p{i}"}) for i in range(n)]


def test_the_journal_gives_back_what_an_earlier_attempt_finished(tmp_path):
    path = tmp_path / "journal.jsonl"
    first = _records(4)
    journal = Journal(path)
    assert journal.load(first) == {}
    journal.add(first[0], Finished({"recordId": "r0", "modelOutput": {"a": 1}}, 3, 4))
    journal.add(first[2], Finished({"recordId": "r2", "error": {"errorCode": 400}}, 0, 0))
    journal.close()
    again = Journal(path)
    finished = again.load(first)
    assert finished == {"0:1": Finished({"recordId": "r0", "modelOutput": {"a": 1}}, 3, 4),
                        "0:3": Finished({"recordId": "r2", "error": {"errorCode": 400}}, 0, 0)}
    again.add(first[1], Finished({"recordId": "r1"}, 1, 1))  # appends after what was there
    again.close()
    assert set(Journal(path).load(first)) == {"0:1", "0:2", "0:3"}


def test_a_line_cut_by_the_kill_is_dropped_and_the_file_cut_back(tmp_path):
    path = tmp_path / "journal.jsonl"
    rows = _records(3)
    journal = Journal(path)
    journal.load(rows)
    journal.add(rows[0], Finished({"recordId": "r0"}, 1, 1))
    journal.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"k": "0:2", "d": "abc", "o": {"recor')  # the kill came mid-write
    again = Journal(path)
    assert set(again.load(rows)) == {"0:1"}
    again.add(rows[1], Finished({"recordId": "r1"}, 1, 1))
    again.close()
    assert set(Journal(path).load(rows)) == {"0:1", "0:2"}
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_record_changed_since_it_was_finished_is_asked_again(tmp_path):
    path = tmp_path / "journal.jsonl"
    rows = _records(2)
    journal = Journal(path)
    journal.load(rows)
    for row in rows:
        journal.add(row, Finished({"recordId": row.record_id}, 1, 1))
    journal.close()
    changed = [rows[0], Record(0, 2, "r1", {"prompt": "another question"})]
    assert set(Journal(path).load(changed)) == {"0:1"}
    moved = [Record(1, 1, "r0", {"prompt": "p0"})]  # same record, another file: another place
    assert Journal(path).load(moved) == {}
