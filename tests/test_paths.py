"""Path <-> text: every name a filesystem can hold survives CSV, Parquet and JSON."""

from __future__ import annotations

import io
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from deepfake_xai.paths import display_path, path_to_text, text_to_path

# A POSIX file name: any bytes but NUL and "/".
NAMES = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b and b"/" not in b)


@given(NAMES)
def test_any_name_round_trips_as_valid_utf8(name):
    path = os.fsdecode(b"/data/" + name)
    text = path_to_text(path)
    text.encode("utf-8")  # strict: no lone surrogates
    assert text_to_path(text) == path
    assert os.fsencode(text_to_path(text)) == b"/data/" + name


def test_ordinary_names_are_stored_as_they_are():
    for path in ("/a/b.jpg", "/tmp/visage été.png", "rel/x.png", "/a/b\\c.png", 'x"y.png'):
        assert path_to_text(path) == path
    assert path_to_text(os.fsdecode(b"/a/bad_\xff.png")) == '"/a/bad_\\xff.png"'
    assert path_to_text('"quoted".png') == '"\\"quoted\\".png"'
    assert text_to_path(path_to_text('"quoted".png')) == '"quoted".png'
    assert path_to_text(b"/a/b.png") == "/a/b.png"


def test_text_survives_csv_parquet_and_json(tmp_path):
    paths = [os.fsdecode(b"/x/bad_\xff\xfe.jpg"), "/x/new\nline.jpg", '"/x/q.jpg', "/x/é.jpg"]
    texts = [path_to_text(p) for p in paths]
    buffer = io.StringIO()
    pd.DataFrame({"path": texts}).to_csv(buffer, index=False)
    from_csv = pd.read_csv(io.StringIO(buffer.getvalue()), keep_default_na=False)["path"]
    pq.write_table(pa.table({"path": texts}), tmp_path / "p.parquet")
    from_parquet = pq.read_table(tmp_path / "p.parquet")["path"].to_pylist()
    from_json = json.loads(json.dumps(texts, ensure_ascii=False).encode("utf-8"))
    for column in (list(from_csv), from_parquet, from_json):
        assert [text_to_path(t) for t in column] == paths


def test_display_path_is_readable_text():
    assert display_path(os.fsdecode(b"/a/bad_\xff.png")) == "/a/bad_\\xff.png"
    assert display_path("/a/new\nline.png") == "/a/new\\nline.png"
    assert display_path(b"/a/b.png") == "/a/b.png"
    display_path(os.fsdecode(b"\x80\x81")).encode("utf-8")
