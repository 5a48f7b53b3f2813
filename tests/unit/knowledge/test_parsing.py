"""Documents to text: every supported format from real files built here, and the reasons a file fails.

The PDFs are written by hand (pypdf cannot write text), so the text pypdf extracts is known exactly; the
DOCX comes from python-docx. A failed document's reason is shown to the user, so the messages are checked.
"""

from __future__ import annotations

import io
import json
import random
import zipfile

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from outcrop.knowledge.parsing import (
    MAX_DOCUMENT_BYTES,
    SUPPORTED_EXTENSIONS,
    Metadata,
    ParseError,
    document_of,
    is_metadata_file,
    is_supported,
    parse,
    parse_metadata,
)
from tests.helpers import make_pdf


def _encrypted(pdf: bytes, user_password: str) -> bytes:
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _reason(key: str, data: bytes) -> str:
    with pytest.raises(ParseError) as caught:
        parse(key, data)
    return str(caught.value)


# -- Keys ------------------------------------------------------------------------------------------------


def test_metadata_keys_name_their_document():
    assert is_metadata_file("docs/a.pdf.metadata.json")
    assert document_of("docs/a.pdf.metadata.json") == "docs/a.pdf"
    assert not is_metadata_file("docs/a.pdf")
    assert not is_metadata_file("docs/.metadata.json")  # describes no document
    with pytest.raises(ValueError):
        document_of("docs/a.pdf")


def test_supported_by_extension_whatever_its_case():
    assert SUPPORTED_EXTENSIONS == {".txt", ".md", ".markdown", ".html", ".htm", ".csv", ".pdf", ".docx"}
    assert is_supported("a/b/Report.PDF") and is_supported("notes.md") and is_supported("x.y/page.htm")
    assert not is_supported("a.pdf.metadata.json") and not is_supported("image.png") and not is_supported("README")


def test_unsupported_types_and_oversized_files_are_refused():
    assert "unsupported file type '.png'" in _reason("a.png", b"\x89PNG")
    assert "without an extension" in _reason("docs/README", b"text")
    assert "over the limit" in _reason("big.txt", b"a" * (MAX_DOCUMENT_BYTES + 1))


# -- Text ------------------------------------------------------------------------------------------------


def test_utf8_text_with_or_without_bom_and_markdown_kept_as_written():
    assert parse("a.txt", "  Grüße\r\nline two\n".encode()) == "Grüße\nline two"
    assert parse("a.txt", b"\xef\xbb\xbfhello") == "hello"
    assert parse("a.md", b"# Title\n\n- *item*") == "# Title\n\n- *item*"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_text_with_a_byte_order_mark(encoding):
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[encoding]
    assert parse("a.txt", bom + "naïve café".encode(encoding)) == "naïve café"


def test_undecodable_and_empty_text():
    assert _reason("a.txt", b"caf\xe9 latin-1").startswith("not UTF-8 text")
    assert _reason("a.txt", b" \n\t ") == "no text found"
    assert _reason("a.txt", b"") == "no text found"


# -- HTML ------------------------------------------------------------------------------------------------


def test_html_keeps_the_visible_text_in_blocks():
    page = b"""<?xml version="1.0" encoding="UTF-8"?>
    <!DOCTYPE html><html><head><title>Hidden title</title><style>p { color: red }</style>
    <script>var secret = 1;</script></head>
    <body><h1>Annual
       report</h1><p>Revenue <b>grew</b>   by 5%.</p><!-- a comment -->
    <script>alert("x")</script><noscript>enable js</noscript>
    <ul><li>first</li><li>second</li></ul>
    <table><tr><th>Region</th><th>Sales</th></tr><tr><td>North</td><td>10</td></tr></table>
    loose text<br>after break &amp; entity</body></html>"""
    assert parse("page.html", page) == ("Annual report\nRevenue grew by 5%.\nfirst\nsecond\nRegion | Sales\n"
                                        "North | 10\nloose text\nafter break & entity")


def test_html_in_a_declared_legacy_charset():
    page = '<html><head><meta charset="windows-1252"></head><body><p>café €5</p></body></html>'
    assert parse("a.htm", page.encode("cp1252")) == "café €5"


def test_html_without_text():
    assert _reason("a.html", b"<html><head><title>t</title></head><body><script>x()</script></body></html>") == \
        "no text found"
    assert _reason("a.html", b"<!-- only a comment -->") == "no text found"


# -- CSV -------------------------------------------------------------------------------------------------


def test_csv_rows_are_self_describing_lines():
    data = b'name,age,city\r\nAda,36,"London,\nUK"\r\n,,\r\nAlan,,Wilmslow,extra\r\n'
    assert parse("people.csv", data) == ("name: Ada; age: 36; city: London, UK\n"
                                         "name: Alan; city: Wilmslow; column 4: extra")


def test_csv_with_only_a_header_keeps_it():
    assert parse("a.csv", b"alpha,beta\n") == "alpha; beta"


def test_csv_utf16_and_undecodable():
    assert parse("a.csv", "k,v\nx,ü\n".encode("utf-16")) == "k: x; v: ü"
    assert _reason("a.csv", b"k,v\n\xff\xfe\xfd,1\n").startswith("not UTF-8 text")


# -- PDF -------------------------------------------------------------------------------------------------


def test_pdf_text_of_every_page():
    pdf = make_pdf("Hello from page one", "And page two")
    assert PdfReader(io.BytesIO(pdf)).pages[0].extract_text() == "Hello from page one"  # the helper is sound
    assert parse("doc.pdf", pdf) == "Hello from page one\n\nAnd page two"


def test_pdf_encrypted_with_an_empty_user_password_opens():
    assert parse("doc.pdf", _encrypted(make_pdf("Open to all"), "")) == "Open to all"


def test_pdf_encrypted_with_a_password_fails():
    assert _reason("doc.pdf", _encrypted(make_pdf("Secret"), "secret")) == \
        "not a readable PDF: it is encrypted with a password"


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "header only"])
def test_corrupt_pdf_fails(damage):
    pdf = make_pdf("Some text")
    data = {"truncated": pdf[: len(pdf) // 2], "random": random.Random(7).randbytes(3000), "empty": b"",
            "header only": b"%PDF-1.4\n"}[damage]
    assert _reason("doc.pdf", data).startswith("not a readable PDF: ")


def test_pdf_without_text():
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    out = io.BytesIO()
    writer.write(out)
    assert _reason("scan.pdf", out.getvalue()) == "no text found"


# -- DOCX ------------------------------------------------------------------------------------------------


def _docx(build) -> bytes:
    document = docx.Document()
    build(document)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_paragraphs_and_tables_in_document_order():
    def build(document):
        document.add_heading("Quarterly report", level=1)
        document.add_paragraph("Sales rose in every region.")
        document.add_paragraph("")
        table = document.add_table(rows=3, cols=3)
        for row, values in zip(table.rows, [("Region", "Q1", "Q2"), ("North", "10", "12"), ("South", "7", "")],
                               strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                cell.text = value
        table.cell(2, 1).merge(table.cell(2, 2))
        document.add_paragraph("See the appendix.")

    assert parse("r.docx", _docx(build)) == ("Quarterly report\nSales rose in every region.\n"
                                             "Region | Q1 | Q2\nNorth | 10 | 12\nSouth | 7\nSee the appendix.")


@pytest.mark.parametrize("data", [b"not a zip at all", b""])
def test_docx_that_is_not_a_zip_fails(data):
    assert _reason("r.docx", data).startswith("not a readable DOCX: ")


def test_docx_zip_without_a_document_fails():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hello.txt", "hi")
    assert _reason("r.docx", out.getvalue()).startswith("not a readable DOCX: ")


def test_docx_without_text():
    assert _reason("r.docx", _docx(lambda document: document.add_paragraph("   "))) == "no text found"


# -- Metadata --------------------------------------------------------------------------------------------


def _metadata(attributes) -> Metadata:
    return parse_metadata(json.dumps({"metadataAttributes": attributes}).encode())


def _metadata_reason(data) -> str:
    with pytest.raises(ParseError) as caught:
        parse_metadata(data if isinstance(data, bytes) else json.dumps(data).encode())
    return str(caught.value)


def test_plain_metadata_is_normalized():
    metadata = _metadata({"year": 2020, "rating": 4.5, "genre": "sf", "tags": ["a", "b"], "ok": True, "none": []})
    assert metadata == Metadata({"year": 2020.0, "rating": 4.5, "genre": "sf", "tags": ["a", "b"], "ok": True,
                                 "none": []}, ())
    assert isinstance(metadata.attributes["year"], float) and metadata.attributes["ok"] is True


def test_typed_metadata_and_what_is_embedded():
    metadata = _metadata({
        "year": {"value": {"type": "NUMBER", "numberValue": 2020}, "includeForEmbedding": True},
        "genre": {"value": {"type": "STRING", "stringValue": "sf"}, "includeForEmbedding": False},
        "tags": {"value": {"type": "STRING_LIST", "stringListValue": ["a"]}},
        "ok": {"value": {"type": "BOOLEAN", "booleanValue": True}, "includeForEmbedding": True},
        "plain": "mixed forms are fine",
    })
    assert metadata.attributes == {"year": 2020.0, "genre": "sf", "tags": ["a"], "ok": True,
                                   "plain": "mixed forms are fine"}
    assert metadata.for_embedding == ("year", "ok")


def test_metadata_file_with_a_bom():
    assert parse_metadata(b"\xef\xbb\xbf" + json.dumps({"metadataAttributes": {"k": "v"}}).encode()).attributes == \
        {"k": "v"}


@pytest.mark.parametrize("key", ["x-amz-bedrock-kb-source-uri", "X-Amz-Bedrock-KB-chunk-id"])
def test_reserved_keys_are_refused(key):
    assert "reserved" in _metadata_reason({"metadataAttributes": {key: "v"}})
    typed = {key: {"value": {"type": "STRING", "stringValue": "v"}}}
    assert key in _metadata_reason({"metadataAttributes": typed})


@pytest.mark.parametrize("document, expected", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\xfd", "not valid JSON"),
    (b'{"metadataAttributes": {"n": NaN}}', "not valid JSON"),
    ([1, 2], '"metadataAttributes" object'),
    ({}, '"metadataAttributes" object'),
    ({"metadataAttributes": ["a"]}, '"metadataAttributes" object'),
    ({"metadataAttributes": {}, "extra": 1}, "'extra'"),
    ({"metadataAttributes": {"": "v"}}, "empty key"),
])
def test_malformed_metadata_files(document, expected):
    assert expected in _metadata_reason(document)


@pytest.mark.parametrize("value, expected", [
    (None, "null"),
    ({"nested": "object"}, "typed form"),
    (["a", 1], "only strings"),
    ([["a"]], "only strings"),
    (10**400, "out of range"),
    ({"value": {"type": "DATE", "stringValue": "x"}}, "value.type must be one of"),
    ({"value": "sf"}, "value.type must be one of"),
    ({"value": {"type": "NUMBER", "stringValue": "1"}}, "unexpected member 'stringValue'"),
    ({"value": {"type": "NUMBER"}}, "missing numberValue"),
    ({"value": {"type": "NUMBER", "numberValue": "1"}}, "numberValue must be a number"),
    ({"value": {"type": "NUMBER", "numberValue": True}}, "numberValue must be a number"),
    ({"value": {"type": "BOOLEAN", "booleanValue": 1}}, "booleanValue must be true or false"),
    ({"value": {"type": "STRING", "stringValue": None}}, "stringValue must be a string"),
    ({"value": {"type": "STRING_LIST", "stringListValue": ["a", 2]}}, "stringListValue must be a list of strings"),
    ({"value": {"type": "STRING", "stringValue": "a"}, "includeForEmbedding": "yes"}, "includeForEmbedding"),
    ({"value": {"type": "STRING", "stringValue": "a"}, "other": 1}, "unknown member 'other'"),
])
def test_malformed_values_name_their_key(value, expected):
    reason = _metadata_reason({"metadataAttributes": {"fine": "ok", "the_key": value}})
    assert "'the_key'" in reason and expected in reason


def test_metadata_over_10_kb_is_refused():
    big = json.dumps({"metadataAttributes": {"k": "x" * 10_300}}).encode()
    assert "10 KB" in _metadata_reason(big)
    assert _metadata({"k": "x" * 10_000}).attributes["k"] == "x" * 10_000
