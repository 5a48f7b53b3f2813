"""Documents to text, as a Bedrock ingestion job reads the files of an S3 data source.

An ingestion job turns every supported file into plain text before chunking; a file that cannot be read
is not an error of the job but a failed document, counted and reported with a reason. That reason is
`str(ParseError)`, so every message here is written for the user who put the file in the bucket.

Beside a document `docs/a.pdf` may lie its sidecar `docs/a.pdf.metadata.json`, the metadata attributes
that retrieval filters on. Bedrock documents two forms of it, plain values and typed values (the typed
form can also ask for an attribute to be embedded with the text); both normalize to `Metadata`.
See https://docs.aws.amazon.com/bedrock/latest/userguide/kb-metadata.html.

Each format is read as simply as gives useful chunks: HTML keeps its block structure as lines, a CSV row
becomes one self-describing line ("header: value; ..."), a table row in a DOCX becomes one line of cells.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".csv", ".pdf", ".docx"})
METADATA_SUFFIX = ".metadata.json"
#: Bedrock's limit on one source document.
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
#: Bedrock's limit on one metadata file.
MAX_METADATA_BYTES = 10 * 1024
#: Attribute keys Bedrock keeps for itself (it adds x-amz-bedrock-kb-source-uri and others to every chunk).
RESERVED_PREFIX = "x-amz-bedrock-kb-"

AttributeValue = str | float | bool | list[str]


class ParseError(Exception):
    """A document that cannot be read; str(exc) is the reason shown to the user (counted as a failed document)."""


# -- Keys ------------------------------------------------------------------------------------------------


def is_metadata_file(key: str) -> bool:
    """True for a sidecar such as `docs/a.pdf.metadata.json` (never indexed as a document itself)."""
    return key.endswith(METADATA_SUFFIX) and not _document_name_empty(key)


def document_of(metadata_key: str) -> str:
    """The document a sidecar describes: `docs/a.pdf.metadata.json` -> `docs/a.pdf`."""
    if not is_metadata_file(metadata_key):
        raise ValueError(f"{metadata_key!r} is not a metadata file (*{METADATA_SUFFIX})")
    return metadata_key[: -len(METADATA_SUFFIX)]


def is_supported(key: str) -> bool:
    return _extension(key) in SUPPORTED_EXTENSIONS


def _document_name_empty(key: str) -> bool:
    document = key[: -len(METADATA_SUFFIX)]
    return document == "" or document.endswith("/")


def _extension(key: str) -> str:
    return posixpath.splitext(key)[1].lower()


# -- Documents -------------------------------------------------------------------------------------------


def parse(key: str, data: bytes) -> str:
    """The text of the document `key` (its name decides the format), or ParseError saying why there is none."""
    extension = _extension(key)
    reader = _READERS.get(extension)
    if reader is None:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        kind = f"file type {extension!r}" if extension else "file without an extension"
        raise ParseError(f"unsupported {kind}; supported types are {supported}")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ParseError(f"the file is {len(data)} bytes, over the limit of {MAX_DOCUMENT_BYTES} bytes (50 MB)")
    text = reader(data).strip()
    if not text:
        raise ParseError("no text found")
    return text


def _decode(data: bytes) -> str:
    """UTF-8 (a BOM allowed), or UTF-16 when a BOM says so: what Bedrock reads as text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError(f"not UTF-16 text despite its byte order mark: {exc.reason} at byte {exc.start}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _read_text(data: bytes) -> str:
    # Markdown is kept as written: its markup is short and often meaningful (headings, lists).
    return _decode(data).replace("\r\n", "\n").replace("\r", "\n")


# - HTML

#: Elements whose content is never text for the reader.
_HIDDEN_TAGS = frozenset({"script", "style", "noscript", "head", "template", "iframe", "object", "svg"})
#: Elements that start a new line; anything else flows inline with its neighbours.
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead",
    "title", "tr", "ul",
})
_CELL_TAGS = frozenset({"td", "th"})
_NEWLINE = "\x00"  # a block boundary while walking; text nodes cannot hold NUL after decoding HTML
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.IGNORECASE)


def _read_html(data: bytes) -> str:
    import lxml.etree
    import lxml.html

    text = _decode_html(data)
    if not text.strip():
        return ""
    # Parsed from UTF-8 bytes, not from the str: lxml refuses a str that carries an XML encoding declaration.
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    try:
        root = lxml.html.document_fromstring(text.replace("\x00", "").encode("utf-8"), parser=parser)
    except lxml.etree.ParserError:
        return ""  # lxml's only complaint after recovering from any markup: "Document is empty"
    pieces: list[str] = []
    _walk_html(root, pieces)
    lines = (re.sub(r"\s+", " ", line).strip() for line in "".join(pieces).split(_NEWLINE))
    return "\n".join(line for line in lines if line)


def _decode_html(data: bytes) -> str:
    """UTF-8/16 as for text, else the charset the page declares (older pages are often windows-1252)."""
    try:
        return _decode(data)
    except ParseError:
        declared = _META_CHARSET.search(data[:4096])
        if declared is None:
            raise
    charset = declared.group(1).decode("ascii")
    try:
        return data.decode(charset)
    except LookupError:
        raise ParseError(f"unknown charset {charset!r} declared by the page") from None
    except UnicodeDecodeError as exc:
        raise ParseError(f"not {charset} text as the page declares: {exc.reason} at byte {exc.start}") from None


def _walk_html(element, pieces: list[str]) -> None:
    tag = element.tag.lower() if isinstance(element.tag, str) else ""
    if tag in _HIDDEN_TAGS:
        pieces.append(_NEWLINE)
        return
    block = tag in _BLOCK_TAGS
    if block:
        pieces.append(_NEWLINE)
    elif tag in _CELL_TAGS and _previous_cell(element) is not None:
        pieces.append(" | ")
    if element.text:
        pieces.append(_html_text(element.text, tag == "pre"))
    for child in element:
        _walk_html(child, pieces)
        if child.tail:
            pieces.append(_html_text(child.tail, tag == "pre"))
    if block:
        pieces.append(_NEWLINE)


def _previous_cell(element):
    previous = element.getprevious()
    while previous is not None and not (isinstance(previous.tag, str) and previous.tag.lower() in _CELL_TAGS):
        previous = previous.getprevious()
    return previous


def _html_text(text: str, preformatted: bool) -> str:
    # Inside <pre> a line break is the author's; elsewhere it is only source formatting.
    return text.replace("\n", _NEWLINE) if preformatted else text.replace("\n", " ")


# - CSV


def _read_csv(data: bytes) -> str:
    text = _decode(data)
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise ParseError(f"not readable CSV: {exc}") from None
    if not rows:
        return ""
    header = [_one_line(name) for name in rows[0]]
    if len(rows) == 1:
        return "; ".join(name for name in header if name)
    return "\n".join(_csv_line(header, row) for row in rows[1:])


def _csv_line(header: list[str], row: list[str]) -> str:
    """One row as `name: value; ...`, so that a row still says what its values are when alone in a chunk."""
    fields = []
    for index, value in enumerate(row):
        value = _one_line(value)
        if not value:
            continue  # an empty cell says nothing; "name: " would only dilute the chunk
        name = header[index] if index < len(header) and header[index] else f"column {index + 1}"
        fields.append(f"{name}: {value}")
    return "; ".join(fields)


def _one_line(value: str) -> str:
    return re.sub(r"\s+", " ", value).strip()


# - PDF


def _read_pdf(data: bytes) -> str:
    from pypdf import PasswordType, PdfReader

    # pypdf raises many kinds of error on a malformed file (its own, but also ValueError, KeyError, ...);
    # whatever it raises, the document is unreadable and the reason is worth showing.
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ParseError("not a readable PDF: it is encrypted with a password")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"not a readable PDF: {exc or type(exc).__name__}") from None
    return "\n\n".join(page for page in pages if page)


# - DOCX


def _read_docx(data: bytes) -> str:
    import docx
    from docx.table import Table

    # A .docx is a zip of XML parts; a damaged one fails in zipfile, lxml or python-docx, all alike to the user.
    try:
        document = docx.Document(io.BytesIO(data))
        lines = []
        for block in document.iter_inner_content():
            lines.extend(_table_lines(block) if isinstance(block, Table) else [block.text])
    except Exception as exc:
        raise ParseError(f"not a readable DOCX: {exc or type(exc).__name__}") from None
    return "\n".join(line.strip() for line in lines if line.strip())


def _table_lines(table) -> Iterator[str]:
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans; its text belongs in the row once.
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(_one_line(cell.text))
        if any(cells):
            yield " | ".join(cells)


_READERS: dict[str, Callable[[bytes], str]] = {
    ".txt": _read_text,
    ".md": _read_text,
    ".markdown": _read_text,
    ".html": _read_html,
    ".htm": _read_html,
    ".csv": _read_csv,
    ".pdf": _read_pdf,
    ".docx": _read_docx,
}


# -- Metadata --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metadata:
    #: Normalized values: numbers as float, booleans, strings, lists of strings.
    attributes: dict[str, AttributeValue]
    #: Keys whose typed form says `"includeForEmbedding": true`: embedded along with each chunk's text.
    for_embedding: tuple[str, ...]


#: The typed form's `value.type` and the member that holds the value.
_TYPED_MEMBERS = {"STRING": "stringValue", "NUMBER": "numberValue", "BOOLEAN": "booleanValue",
                  "STRING_LIST": "stringListValue"}


def parse_metadata(data: bytes) -> Metadata:
    """A sidecar `<document>.metadata.json`, in Bedrock's plain or typed form, or ParseError naming what is wrong."""
    if len(data) > MAX_METADATA_BYTES:
        raise ParseError(
            f"the metadata file is {len(data)} bytes, over the limit of {MAX_METADATA_BYTES} bytes (10 KB)")
    document = _load_json(data)
    if not isinstance(document, dict) or not isinstance(document.get("metadataAttributes"), dict):
        raise ParseError('the metadata file must be a JSON object with a "metadataAttributes" object')
    unknown = sorted(set(document) - {"metadataAttributes"})
    if unknown:
        raise ParseError(f'unknown member {unknown[0]!r} in the metadata file (only "metadataAttributes" is allowed)')
    attributes: dict[str, AttributeValue] = {}
    for_embedding: list[str] = []
    for key, raw in document["metadataAttributes"].items():
        _check_key(key)
        if isinstance(raw, dict):
            attributes[key], embedded = _typed_value(key, raw)
            if embedded:
                for_embedding.append(key)
        else:
            attributes[key] = _plain_value(key, raw)
    return Metadata(attributes, tuple(for_embedding))


def _load_json(data: bytes):
    def refuse_constant(name: str):
        raise ValueError(f"{name} is not a JSON number")

    try:
        # json.loads on bytes detects UTF-8 (with or without BOM), UTF-16 and UTF-32 by itself.
        return json.loads(data, parse_constant=refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"the metadata file is not valid JSON: {exc}") from None


def _check_key(key: str) -> None:
    if not key.strip():
        raise ParseError("metadata attribute with an empty key")
    if key.lower().startswith(RESERVED_PREFIX):
        raise ParseError(f"metadata attribute {key!r}: keys beginning with {RESERVED_PREFIX!r} are reserved")


def _plain_value(key: str, value) -> AttributeValue:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return _number(key, value)
    if isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            return list(value)
        raise ParseError(f"metadata attribute {key!r}: a list must hold only strings")
    if value is None:
        raise ParseError(f"metadata attribute {key!r}: null is not a value")
    raise ParseError(f"metadata attribute {key!r}: unsupported value {type(value).__name__}")


def _typed_value(key: str, raw: dict) -> tuple[AttributeValue, bool]:
    """`{"value": {"type": ..., "<type>Value": ...}, "includeForEmbedding": bool}` -> (value, embedded)."""
    if "value" not in raw:
        raise ParseError(f'metadata attribute {key!r}: a nested object must be the typed form {{"value": {{...}}}}')
    unknown = sorted(set(raw) - {"value", "includeForEmbedding"})
    if unknown:
        raise ParseError(f"metadata attribute {key!r}: unknown member {unknown[0]!r}")
    embedded = raw.get("includeForEmbedding", False)
    if not isinstance(embedded, bool):
        raise ParseError(f"metadata attribute {key!r}: includeForEmbedding must be true or false")
    value = raw["value"]
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in _TYPED_MEMBERS:
        raise ParseError(f"metadata attribute {key!r}: value.type must be one of {', '.join(_TYPED_MEMBERS)}")
    member = _TYPED_MEMBERS[kind]
    unknown = sorted(set(value) - {"type", member})
    if unknown or member not in value:
        problem = f"unexpected member {unknown[0]!r}" if unknown else f"missing {member}"
        raise ParseError(f"metadata attribute {key!r}: {problem} for type {kind}")
    return _typed_member(key, kind, value[member]), embedded


def _typed_member(key: str, kind: str, item) -> AttributeValue:
    valid = {
        "STRING": isinstance(item, str),
        "NUMBER": isinstance(item, int | float) and not isinstance(item, bool),
        "BOOLEAN": isinstance(item, bool),
        "STRING_LIST": isinstance(item, list) and all(isinstance(entry, str) for entry in item),
    }[kind]
    if not valid:
        expected = {"STRING": "a string", "NUMBER": "a number", "BOOLEAN": "true or false",
                    "STRING_LIST": "a list of strings"}[kind]
        raise ParseError(f"metadata attribute {key!r}: {_TYPED_MEMBERS[kind]} must be {expected}")
    if kind == "NUMBER":
        return _number(key, item)
    return list(item) if kind == "STRING_LIST" else item


def _number(key: str, value: int | float) -> float:
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise ParseError(f"metadata attribute {key!r}: the number is out of range")
    return number
