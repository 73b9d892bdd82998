"""`POST /v1/documents` read as it arrives: multipart/form-data parsed piece by piece (python-multipart's
streaming parser) straight into an UploadSink, so a file of a refused type is never written and an
upload past its limits is cut off the moment it passes them; no temp copy of the body is spooled first."""

from __future__ import annotations

from collections.abc import Callable

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from ingest.uploads import UploadSink

FIELD_BYTES = 1000  # a form field (`collection`) is short
MAX_PARTS = 1000  # files and fields together: each costs a little memory even when refused


class BadUpload(Exception):
    """The body is not an upload kb understands (the message says why): HTTP 400."""


class MultipartUpload:
    """Feed the body's pieces to `feed`, then call `finish`. `sink_for(collection)` is asked for the sink
    when the first file arrives: the collection field, when sent, must come before the files."""

    def __init__(self, content_type: str | None, sink_for: Callable[[str | None], UploadSink],
                 sink: UploadSink | None = None):
        kind, params = parse_options_header(content_type or "")
        if kind != b"multipart/form-data" or not params.get(b"boundary"):
            raise BadUpload("send the files as multipart/form-data, in fields named `files`")
        self.sink_for = sink_for
        self.sink = sink  # given: the collection is chosen already (?collection=)
        self.collection: str | None = None
        self.parts, self.ended = 0, False
        self._header, self._value, self._headers = b"", b"", {}
        self._part: str | None = None  # "file" (accepted), "field" (`collection`), "skip" (refused, ignored)
        self._field = bytearray()
        try:
            self.parser = self._parser(params[b"boundary"])
        except FormParserError as exc:
            raise BadUpload(f"the multipart boundary cannot be used: {exc}") from exc

    def _parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._end,
            "on_end": self._finished})

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError as exc:
            raise BadUpload(f"the multipart body cannot be read: {exc}") from exc

    def finish(self) -> UploadSink:
        try:
            self.parser.finalize()
        except FormParserError as exc:
            raise BadUpload(f"the multipart body cannot be read: {exc}") from exc
        if not self.ended:
            raise BadUpload("the upload was cut short (its closing boundary never came): nothing was kept")
        if self.sink is None:
            raise BadUpload("no file in the upload (send them in fields named `files`)")
        return self.sink

    def _finished(self) -> None:
        self.ended = True

    def _begin(self) -> None:
        self._headers, self._part = {}, None
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadUpload(f"more than {MAX_PARTS} parts in one upload")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is None:  # a plain form field: only `collection` means something
            if name == "collection" and self.sink is not None:
                raise BadUpload("give the collection once, before the files (the `collection` field or ?collection=)")
            self._part, self._field = ("field" if name == "collection" else "skip"), bytearray()
            return
        if self.sink is None:
            self.sink = self.sink_for(self.collection or None)
        refused = self.sink.begin(filename.decode("utf-8", "replace") or "upload")
        self._part = "skip" if refused else "file"

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self.sink.write(data[start:end])
        elif self._part == "field":
            self._field += data[start:end]
            if len(self._field) > FIELD_BYTES:
                raise BadUpload(f"the form field 'collection' is longer than {FIELD_BYTES} bytes")

    def _end(self) -> None:
        if self._part == "file":
            self.sink.end()
        elif self._part == "field":
            self.collection = self._field.decode("utf-8", "replace").strip()
        self._part = None
