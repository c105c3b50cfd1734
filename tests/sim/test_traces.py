"""Trace formats: detection, parsing, and one-line errors naming the line and the field."""

from __future__ import annotations

import json

import pytest

from llmco2_sidecar.cli.main import main
from llmco2_sidecar.errors import InputError
from llmco2_sidecar.sim.traces import open_trace, parse_timestamp, read_trace


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_jsonl_arrival_and_ids(tmp_path):
    p = _write(tmp_path, "t.jsonl", '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 3, "request_id": "a"}\n'
               '\n{"arrival_s": 1.5, "prompt_tokens": 20, "output_tokens": 1}\n')
    reqs, t = read_trace(p)
    assert t.format == "jsonl" and t.epoch_s is None
    assert [(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens) for r in reqs] == [
        ("a", 0.0, 10, 3), ("req-2", 1.5, 20, 1)]


def test_jsonl_timestamps_give_epoch(tmp_path):
    p = _write(tmp_path, "t.jsonl", '{"timestamp": "2024-05-10T00:00:01Z", "prompt_tokens": 10, "output_tokens": 3}\n'
               '{"timestamp": "2024-05-10T02:00:03+02:00", "prompt_tokens": 5, "output_tokens": 2}\n')
    reqs, t = read_trace(p)
    assert t.epoch_s == parse_timestamp("2024-05-10 00:00:01")
    assert reqs[1].arrival_s == pytest.approx(2.0)


def test_csv_with_arrival_and_timestamp_columns(tmp_path):
    p = _write(tmp_path, "t.csv", "request_id,arrival_s,prompt_tokens,output_tokens\nx,0,5,5\ny,0.25,7,1\n")
    reqs, t = read_trace(p)
    assert t.format == "csv" and [r.request_id for r in reqs] == ["x", "y"] and reqs[1].arrival_s == 0.25
    p = _write(tmp_path, "u.csv", "timestamp,prompt_tokens,output_tokens\n1700000000.5,5,5\n1700000001,7,1\n")
    reqs, t = read_trace(p)
    assert t.epoch_s == 1700000000.5 and reqs[1].arrival_s == 0.5


def test_azure_2023_and_2024_layouts(tmp_path):
    p = _write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
               "2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:16:00.0000000,0,5\n")
    reqs, t = read_trace(p)
    assert t.format == "azure" and len(reqs) == 2 and t.skipped == 1 and t.rows == 3
    assert reqs[1].arrival_s == pytest.approx(4.314579, abs=1e-6)
    assert t.epoch_s == pytest.approx(1700158546.68059)
    p = _write(tmp_path, "b.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.009930+00:00,1,2\n"
               "2024-05-10 00:00:01.009930+00:00,3,4\n")
    reqs, t = read_trace(p)
    assert t.format == "azure" and reqs[1].arrival_s == pytest.approx(1.0)


def test_bundled_conversation_trace_parses_like_the_demo_loader():
    from llmco2_sidecar.sim.trace import BUNDLED_CONV, load_azure_conv

    old, epoch = load_azure_conv(minutes=2)
    t = open_trace(BUNDLED_CONV)
    new = []
    for r in t:
        if r.arrival_s > 120:
            break
        new.append(r)
    assert len(new) == len(old) and t.epoch_s == epoch
    assert all(abs(a.arrival_s - b.arrival_s) < 1e-9 and a.prompt_tokens == b.prompt_tokens for a, b in zip(new, old))


def test_vllm_bench_result(tmp_path):
    doc = {"date": "20261206-101010", "input_lens": [10, 20, 30], "output_lens": [5, 0, 7],
           "start_times": [1765015810.5, 1765015810.0, 1765015811.0], "errors": ["", "timeout", ""],
           "ttfts": [0.1, 0, 0.2]}
    p = _write(tmp_path, "r.json", json.dumps(doc, indent=2))
    reqs, t = read_trace(p)
    assert t.format == "vllm-bench" and t.skipped == 1 and t.epoch_s == 1765015810.5
    assert [(r.arrival_s, r.prompt_tokens) for r in reqs] == [(0.0, 10), (0.5, 30)]
    del doc["start_times"]
    p = _write(tmp_path, "s.json", json.dumps(doc))
    with pytest.raises(InputError, match="start_times: missing"):
        read_trace(p)


@pytest.mark.parametrize("text,where", [
    ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n{"arrival_s": 1, "prompt_tokens": "x", "output_tokens": 1}\n',
     "line 2: prompt_tokens"),
    ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n{"arrival_s": 1, "prompt_tokens": 3}\n',
     "line 2: output_tokens"),
    ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\nnot json\n', "line 2: json"),
    ('{"arrival_s": 5, "prompt_tokens": 1, "output_tokens": 1}\n{"arrival_s": 1, "prompt_tokens": 1, "output_tokens": 1}\n',
     "line 2: arrival"),
    ('{"arrival_s": -1, "prompt_tokens": 1, "output_tokens": 1}\n', "line 1: arrival_s"),
    ('{"prompt_tokens": 1, "output_tokens": 1}\n', "line 1: arrival_s"),
])
def test_bad_jsonl_names_line_and_field(tmp_path, text, where):
    p = _write(tmp_path, "bad.jsonl", text)
    with pytest.raises(InputError, match=where):
        read_trace(p)


def test_bad_csv_names_line_and_field(tmp_path):
    p = _write(tmp_path, "bad.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n0.5,1,1.5\n")
    with pytest.raises(InputError, match="line 3: output_tokens"):
        read_trace(p)
    p = _write(tmp_path, "bad2.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1,1\n2023-13-16 18:15:47,1,1\n")
    with pytest.raises(InputError, match="line 3: TIMESTAMP"):
        read_trace(p)
    p = _write(tmp_path, "bad3.csv", "when,prompt,output\n1,2,3\n")
    with pytest.raises(InputError, match="format"):
        open_trace(p)


def test_cli_bad_trace_is_one_line_exit_2(tmp_path, capsys):
    p = _write(tmp_path, "bad.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n0.5,-3,1\n")
    rc = main(["replay", "--trace", p, "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "A100", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "line 3: prompt_tokens" in err


def test_a_request_id_given_twice_is_refused_naming_both_lines(tmp_path, monkeypatch):
    from llmco2_sidecar.sim import traces

    p = tmp_path / "dup.jsonl"
    p.write_text('{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 2, "request_id": "a"}\n'
                 '{"arrival_s": 1, "prompt_tokens": 5, "output_tokens": 2, "request_id": "b"}\n'
                 '{"arrival_s": 2, "prompt_tokens": 5, "output_tokens": 2, "request_id": "a"}\n')
    with pytest.raises(InputError) as e:
        read_trace(p)
    assert "line 3: request_id" in str(e.value) and "'a' was already used on line 1" in str(e.value)
    c = tmp_path / "dup.csv"
    c.write_text("arrival_s,prompt_tokens,output_tokens,request_id\n0,5,2,x\n1,5,2,x\n")
    with pytest.raises(InputError, match="line 3: request_id"):
        read_trace(c)
    # ids the trace does not give are ours and unique; the memory of given ids is bounded
    n = tmp_path / "noids.csv"
    n.write_text("arrival_s,prompt_tokens,output_tokens\n0,5,2\n1,5,2\n")
    assert [r.request_id for r in read_trace(n)[0]] == ["req-1", "req-2"]
    monkeypatch.setattr(traces, "ID_MEMORY", 1)
    assert len(read_trace(p)[0]) == 3  # "a" again two requests later: beyond a memory of one id
