"""Uploads received piece by piece (app/upload_stream.py into ingest/uploads.py): a refused type is never
written, a file or a batch past its limit is cut off at once with nothing left, long names keep their
extension."""

from __future__ import annotations

import pytest

from app.upload_stream import BadUpload, MultipartUpload
from ingest.uploads import UploadSink, UploadTooLarge, safe_upload_name

BOUNDARY = "kbtestboundary"


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def receive(data: bytes, sink: UploadSink, piece: int = 64 * 1024, watch=None):  # noqa: ANN001, ANN201
    chosen = []
    upload = MultipartUpload(f"multipart/form-data; boundary={BOUNDARY}", lambda c: chosen.append(c) or sink)
    fed = 0
    for i in range(0, len(data), piece):
        upload.feed(data[i:i + piece])
        fed += len(data[i:i + piece])
        if watch:
            watch(fed)
    return upload.finish(), chosen


def test_a_refused_type_is_never_written_and_the_rest_arrives(tmp_path):
    target = tmp_path / "uploads"
    sink = UploadSink(target, max_file_mb=5, max_total_mb=10, max_files=10)
    seen: set[str] = set()
    data = body(part("collection", b"legal"), part("files", b"MZ" + b"\0" * 2_000_000, "setup.exe"),
                part("files", b"# Leave\n\nthirty days\n", "leave.md"))
    done, chosen = receive(data, sink, watch=lambda _: seen.update(p.name for p in target.glob("*")))
    assert chosen == ["legal"]  # the collection field came first and chose the sink
    assert not any("exe" in name for name in seen)  # not even a temp file
    assert [p.name for p in done.commit()] == ["leave.md"] and (target / "leave.md").read_bytes().startswith(b"# Leave")
    assert done.refused[0][0].endswith("setup.exe") and "unsupported file type '.exe'" in done.refused[0][1]


@pytest.mark.parametrize("limits, reason", [((2, 10), "big.txt: too large: more than 2 MB"),
                                            ((5, 2), "too large: more than 2 MB in all")])
def test_past_a_limit_the_upload_is_cut_off_at_once_and_nothing_is_left(tmp_path, limits, reason):
    target = tmp_path / "uploads"
    sink = UploadSink(target, max_file_mb=limits[0], max_total_mb=limits[1], max_files=10)
    fed: list[int] = []
    data = body(part("files", b"a" * 1_500_000, "first.txt"), part("files", b"b" * 3_000_000, "big.txt"))
    with pytest.raises(UploadTooLarge, match=reason):
        receive(data, sink, watch=fed.append)
    assert fed[-1] < min(limits) * 1e6 + 1_500_000 + 200_000 < len(data)  # stopped as soon as it passed, not at the end
    assert list(target.glob("*")) == []  # the first file (received whole) is gone too


def test_the_collection_must_come_before_the_files_and_the_body_must_be_multipart(tmp_path):
    sink = UploadSink(tmp_path / "u", 1, 1, 1)
    with pytest.raises(BadUpload, match="once, before the files"):
        receive(body(part("files", b"x", "a.md"), part("collection", b"hr")), sink)
    with pytest.raises(BadUpload, match="multipart/form-data"):
        MultipartUpload("application/json", lambda c: sink)
    with pytest.raises(BadUpload, match="boundary"):
        MultipartUpload("multipart/form-data; boundary=" + "b" * 300, lambda c: sink)
    other = UploadSink(tmp_path / "w", 1, 1, 5)  # a plain field named `file` or `skip` is ignored, not a crash
    done, _ = receive(body(part("file", b"x"), part("skip", b"y"), part("files", b"# A\n\nz\n", "a.md")), other)
    assert [p.name for p in done.commit()] == ["a.md"]
    with pytest.raises(BadUpload, match="no file"):
        receive(body(part("collection", b"hr")), sink)
    cut = body(part("files", b"# A\n\nwhole\n", "a.md"), part("files", b"# B\n\nhalf of it", "b.md"))[:-40]
    with pytest.raises(BadUpload, match="cut short"):
        receive(cut, UploadSink(tmp_path / "v", 1, 1, 5))


def test_a_long_name_is_shortened_in_its_stem_and_keeps_its_extension():
    name = safe_upload_name("报告" * 150 + ".docx")
    assert 190 < len(name.encode()) <= 200 and name.endswith(".docx") and name.startswith("报告")  # bytes: 255 max
    assert len(safe_upload_name("a" * 10_000 + ".pdf")) == 200
    assert safe_upload_name("../../etc/passwd") == "passwd"
