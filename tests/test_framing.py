"""progress.jsonl's framing (conformance/framing.py): writes of whole lines within a port's
limit, long lines as pieces that come back whole wherever other lines land between them."""

import json
import os

from conformance import framing


def lines_of(*entries: dict) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in entries).encode()


def test_short_entries_go_in_one_write_as_they_are() -> None:
    data = lines_of({"begin": "a"}, {"case": {"id": "a.x"}})
    assert list(framing.writes(data)) == [data]


def test_every_write_is_whole_lines_within_the_limit() -> None:
    data = lines_of(*({"case": {"id": str(n), "pad": "x" * 9000}} for n in range(10)),
                    {"case": {"id": "long", "pad": "\\\"é" * 50000}})
    writes = list(framing.writes(data))
    assert len(writes) > 4
    assert all(len(w) <= framing.MAX_WRITE and w.endswith(b"\n") for w in writes)
    lines = b"".join(writes).decode().splitlines()
    assert [e["case"]["id"] for e in framing.entries(lines)] == [*map(str, range(10)), "long"]
    assert json.loads(data.splitlines()[-1]) == list(framing.entries(lines))[-1]


def test_a_long_entry_comes_back_where_its_last_piece_lands() -> None:
    pieces = b"".join(framing.writes(lines_of({"case": {"id": "long", "pad": "x" * 70000}})))
    first, *rest = pieces.decode().splitlines()
    other = json.dumps({"case": {"id": "other"}})
    got = list(framing.entries([first, other, *rest]))
    assert [e["case"]["id"] for e in got] == ["other", "long"]
    assert got[1]["case"]["pad"] == "x" * 70000


def test_a_long_entry_cut_off_is_left_out_and_the_rest_read() -> None:
    """A run that died between two pieces: the next boot's lines still read."""
    pieces = b"".join(framing.writes(lines_of({"case": {"id": "torn", "pad": "x" * 70000}})))
    lines = pieces.decode().splitlines()
    after = [json.dumps({"case": {"id": "next"}}), '{"case": {"id": "half']
    assert [e["case"]["id"] for e in framing.entries([*lines[:-1], *after])] == ["next"]


def test_the_appender_writes_every_line_whole(tmp_path) -> None:
    path = tmp_path / "progress.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    appender = framing.Appender(fd)
    sent = [{"case": {"id": str(n), "pad": "x" * (n * 997)}} for n in range(12)]
    appender.write(lines_of(*sent[:5]))
    appender.write(lines_of(*sent[5:]))
    appender.close()
    os.close(fd)
    assert list(framing.entries(path.read_text().splitlines())) == sent
