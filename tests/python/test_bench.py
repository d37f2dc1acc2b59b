"""tensord-bench against the real daemon: its numbers, its checks and its outputs."""

import csv
import io
import json
import subprocess

import pytest
from PIL import Image

from conftest import BINARY, Daemon

BENCH = str(BINARY.parent / "tensord-bench")


@pytest.fixture(scope="module")
def server():
    d = Daemon("--threads", "1")
    yield d
    d.stop()


def bench(server, *args, expect=0):
    done = subprocess.run([BENCH, "--url", f"http://{server.url}", "--threads", "1", "--warmup", "0s",
                           "--quiet", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == expect, done.stderr
    return done


def test_closed_loop_counts_checks_and_server_stats(server):
    out = bench(server, "--model", "identity", "--shape", "INPUT0:1,16", "--binary", "--concurrency", "1,4",
                "--requests", "300", "--warmup", "200ms", "--json")
    report = json.loads(out.stdout)
    assert report["model"] == "identity" and report["binary"] is True
    assert [r["concurrency"] for r in report["results"]] == [1, 4]
    for r in report["results"]:
        assert r["requests"] == 300 and r["errors"] == 0
        lat = r["latency_us"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["throughput_rps"] == pytest.approx(300 / r["duration_s"])
        # Each request: a JSON header plus 64 bytes; each answer the same 64 bytes back.
        assert r["sent_bytes_per_s"] > 64 * r["throughput_rps"]
        assert r["received_bytes_per_s"] > 64 * r["throughput_rps"]
        # The server's statistics extension saw (about) the measured requests.
        assert 150 <= r["server"]["requests"] <= 450, r["server"]


@pytest.mark.parametrize("warmup", ["0s", "300ms"])
def test_a_request_count_reports_true_numbers(server, warmup):
    # A short closed-loop run, with and without warm-up: its duration covers the requests
    # (never a near-zero window or an impossible rate), and the server saw exactly them.
    out = bench(server, "--model", "identity", "--shape", "INPUT0:1,16", "--binary", "--concurrency", "2",
                "--requests", "20", "--warmup", warmup, "--json")
    r = json.loads(out.stdout)["results"][0]
    lat = r["latency_us"]
    assert r["requests"] == 20 and r["errors"] == 0
    assert r["duration_s"] * 1e6 >= 10 * lat["p50"], r  # 20 requests on 2 streams, one after another
    assert r["throughput_rps"] == pytest.approx(20 / r["duration_s"]) and r["throughput_rps"] < 1e6
    assert lat["p50"] > 1 and lat["max"] >= lat["p50"]
    assert r["server"]["requests"] == 20, r["server"]


def test_wrong_values_fail_loudly_with_a_nonzero_exit(server):
    # add_sub's OUTPUT0 is INPUT0 + INPUT1: checked as an identity it must fail.
    out = bench(server, "--model", "add_sub", "--values", "identity", "--requests", "20", expect=1)
    assert "ERRORS: 20 requests failed" in out.stderr
    assert "OUTPUT0" in out.stderr
    # Checked as add_sub, it passes.
    bench(server, "--model", "add_sub", "--requests", "20")


def test_open_loop_holds_the_offered_rate(server):
    out = bench(server, "--model", "add_sub", "--request-rate", "200", "--arrival", "constant",
                "--duration", "2s", "--concurrency", "4", "--json")
    r = json.loads(out.stdout)["results"][0]
    assert r["request_rate"] == 200
    assert r["errors"] == 0
    assert r["requests"] == pytest.approx(400, abs=8)
    assert r["throughput_rps"] == pytest.approx(200, rel=0.05)


def test_json_tensors_csv_and_plots(server, tmp_path):
    out = bench(server, "--model", "identity", "--shape", "INPUT0:2,8", "--datatype", "INPUT0:INT64",
                "--input-data", "zero", "--requests", "50", "--csv", "--label", "zeros",
                "--output", str(tmp_path / "a.json"))
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 1
    assert rows[0]["label"] == "zeros" and rows[0]["binary"] == "false"
    assert rows[0]["requests"] == "50" and rows[0]["errors"] == "0"
    subprocess.run([BENCH, "--from", str(tmp_path / "a.json"), "--plot", str(tmp_path / "p.svg")], check=True)
    svg = (tmp_path / "p.svg").read_text()
    assert svg.startswith("<svg") and "zeros" in svg and "Throughput" in svg


def test_input_data_from_a_file_and_from_images(server, tmp_path):
    data = {"data": [{"INPUT0": [1, 2, 3]}, {"INPUT0": {"content": [4, 5], "shape": [2]}}]}
    (tmp_path / "in.json").write_text(json.dumps(data))
    bench(server, "--model", "identity", "--shape", "INPUT0:3", "--datatype", "INPUT0:INT32",
          "--input-data", str(tmp_path / "in.json"), "--requests", "10")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(images / "a.png")
    Image.new("RGB", (8, 6), (40, 50, 60)).save(images / "b.jpg")
    out = bench(server, "--model", "image_probe", "--shape", "IMAGE:-1", "--datatype", "IMAGE:BYTES",
                "--input-data", str(images), "--batch-size", "2", "--requests", "10", "--json")
    assert json.loads(out.stdout)["results"][0]["errors"] == 0


def test_bad_arguments_are_errors(server):
    out = bench(server, "--model", "identity", "--url", "https://x", expect=2)
    assert "only http://" in out.stderr
    out = bench(server, "--model", "identity", "--shape", "INPUT0:1,x", expect=2)
    assert "comma-separated integers" in out.stderr
