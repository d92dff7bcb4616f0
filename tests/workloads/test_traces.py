"""Trace readers: each format, detection, bad rows, replay options."""

import json

import numpy as np
import pytest

from infersim.errors import ConfigError, TraceFormatError
from infersim.workloads.traces import detect_format, load_trace, read_trace

SPLITWISE = "arrived_at,num_prefill_tokens,num_decode_tokens\n"
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_splitwise(tmp_path):
    path = write(tmp_path, "s.csv", SPLITWISE + "10.0,100,5\n10.5,200,6\n12.0,300,7\n")
    assert detect_format(path) == "splitwise"
    r = read_trace(path)
    np.testing.assert_allclose(r.arrival_s, [0.0, 0.5, 2.0])
    assert r.prompt_tokens.tolist() == [100, 200, 300]
    assert r.output_tokens.tolist() == [5, 6, 7]


def test_azure_datetime_with_seven_fraction_digits(tmp_path):
    path = write(tmp_path, "a.csv", AZURE
                 + "2023-11-16 18:15:46.6805900,374,44\n"
                 + "2023-11-16 18:15:50.9951690,396,109\n"
                 + "2023-11-16 18:16:00,879,56\n")
    assert detect_format(path) == "azure"
    r = read_trace(path)
    np.testing.assert_allclose(r.arrival_s, [0.0, 4.314579, 13.31941], atol=1e-6)
    assert r.prompt_tokens.tolist() == [374, 396, 879]


def test_vllm_jsonl_epoch_seconds(tmp_path):
    rows = [{"request_id": "a", "input_toks": 20, "output_toks": 3, "arrival_time": 1.7e9 + 0.25},
            {"request_id": "b", "input_toks": 30, "output_toks": 4, "arrival_time": 1.7e9}]
    path = write(tmp_path, "r.jsonl", jsonl(rows))
    assert detect_format(path) == "jsonl"
    r = read_trace(path)  # sorted by arrival
    np.testing.assert_allclose(r.arrival_s, [0.0, 0.25])
    assert r.prompt_tokens.tolist() == [30, 20]


def test_mooncake_ms_and_prefix_hashes(tmp_path):
    rows = [{"timestamp": 3000, "input_length": 600, "output_length": 5, "hash_ids": [0, 2]},
            {"timestamp": 1000, "input_length": 512, "output_length": 4, "hash_ids": [0]},
            {"timestamp": 2000, "input_length": 1100, "output_length": 3, "hash_ids": [0, 1, 2]}]
    path = write(tmp_path, "m.jsonl", jsonl(rows))
    trace = load_trace(path)
    assert trace.format == "mooncake" and trace.prefix_block_tokens == 512
    np.testing.assert_allclose(trace.requests.arrival_s, [0.0, 1.0, 2.0])
    assert trace.requests.prompt_tokens.tolist() == [512, 1100, 600]
    assert [h.tolist() for h in trace.prefix_hashes] == [[0], [0, 1, 2], [0, 2]]
    tail = load_trace(path, start_s=0.5)  # hashes stay aligned with windowed rows
    assert [h.tolist() for h in tail.prefix_hashes] == [[0, 1, 2], [0, 2]]


def test_explicit_format_and_extra_columns(tmp_path):
    path = write(tmp_path, "x.csv", "id,arrived_at,num_prefill_tokens,num_decode_tokens\n"
                                    "a,0,1,1\nb,1,2,2\n")
    assert len(read_trace(path, "splitwise")) == 2
    with pytest.raises(TraceFormatError) as err:
        read_trace(path, "azure")
    assert err.value.line == 1 and err.value.field == "TIMESTAMP"


def test_unknown_header(tmp_path):
    path = write(tmp_path, "u.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(TraceFormatError, match="unrecognised"):
        read_trace(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_trace(tmp_path / "nope.csv")


@pytest.mark.parametrize(("body", "line", "field", "problem"), [
    ("0,1,1\n1,,1\n", 3, "num_prefill_tokens", "missing"),
    ("0,1,1\n1,2\n", 3, "num_decode_tokens", "missing"),
    ("0,1,1\n1,2,1\n2,abc,1\n", 4, "num_prefill_tokens", "not a number"),
    ("0,1,1\n-1,2,1\n", 3, "arrived_at", "negative"),
    ("0,1,1\n1,2,0\n", 3, "num_decode_tokens", ">= 1"),
    ("0,1,1\n1,2.5,1\n", 3, "num_prefill_tokens", "whole number"),
    ("0,1,1\n\n1,1,1\n2,1,-3\n", 5, "num_decode_tokens", "negative"),  # blank lines count
    ("0,1,1\n1,1,1,1\n", 3, "row", "Expected 3 fields"),
])
def test_bad_csv_row(tmp_path, body, line, field, problem):
    path = write(tmp_path, "bad.csv", SPLITWISE + body)
    with pytest.raises(TraceFormatError) as err:
        read_trace(path)
    e = err.value
    assert (e.path, e.line, e.field) == (str(path), line, field)
    assert problem in str(e) and f"bad.csv:{line}:" in str(e)


def test_bad_azure_timestamp(tmp_path):
    path = write(tmp_path, "bad.csv", AZURE + "2023-11-16 18:15:46.6805900,1,1\nyesterday,1,1\n")
    with pytest.raises(TraceFormatError, match="not a datetime") as err:
        read_trace(path)
    assert (err.value.line, err.value.field) == (3, "TIMESTAMP")


@pytest.mark.parametrize(("lines", "line", "field"), [
    (['{"input_toks": 1, "output_toks": 1, "arrival_time": 0}',
      '{"input_toks": 1, "arrival_time": 1}'], 2, "output_toks"),
    (['{"input_toks": 1, "output_toks": 1, "arrival_time": 0}', "",
      '{"input_toks": "x", "output_toks": 1, "arrival_time": 1}'], 3, "input_toks"),
    (['{"input_toks": 1, "output_toks": 1, "arrival_time": 0}', '{"input_toks": 1,'], 2, "row"),
])
def test_bad_jsonl_row(tmp_path, lines, line, field):
    path = write(tmp_path, "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError) as err:
        read_trace(path)
    assert (err.value.line, err.value.field) == (line, field)


def test_bad_mooncake_hash_ids(tmp_path):
    rows = [{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1]},
            {"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": ["a"]}]
    with pytest.raises(TraceFormatError) as err:
        read_trace(write(tmp_path, "m.jsonl", jsonl(rows)))
    assert (err.value.line, err.value.field) == (2, "hash_ids")


@pytest.fixture
def ten_requests(tmp_path):
    """Arrivals at 0, 1, ..., 9 s."""
    return write(tmp_path, "ten.csv",
                 SPLITWISE + "".join(f"{t},{t + 1},{t + 2}\n" for t in range(10)))


def test_rate_scale_halves_duration(ten_requests):
    assert read_trace(ten_requests).duration_s == 9.0
    assert read_trace(ten_requests, rate_scale=2.0).duration_s == 4.5


def test_window_then_scale_then_cap(ten_requests):
    r = read_trace(ten_requests, start_s=2.5, end_s=7.0)  # keeps 3, 4, 5, 6 -> shifted by 2.5
    np.testing.assert_allclose(r.arrival_s, [0.5, 1.5, 2.5, 3.5])
    assert r.prompt_tokens.tolist() == [4, 5, 6, 7]
    r = read_trace(ten_requests, start_s=2.5, end_s=7.0, rate_scale=0.5, max_requests=2)
    np.testing.assert_allclose(r.arrival_s, [1.0, 3.0])


def test_empty_window_and_bad_options(ten_requests):
    with pytest.raises(ConfigError, match="no requests"):
        read_trace(ten_requests, start_s=20.0)
    with pytest.raises(ConfigError, match="rate_scale"):
        read_trace(ten_requests, rate_scale=0.0)


def test_cache_sees_file_changes(tmp_path):
    path = write(tmp_path, "c.csv", SPLITWISE + "0,1,1\n")
    assert len(read_trace(path)) == 1
    path.write_text(SPLITWISE + "0,1,1\n1,2,2\n3,3,3\n")
    assert len(read_trace(path)) == 3
