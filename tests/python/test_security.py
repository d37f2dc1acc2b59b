"""What a client on the network can and cannot do (issue 25): each attack the issue proved,
re-run against a daemon with default flags, and the options that open each admin surface
(model control modes, restricted API groups, the trace file, config paths, staging,
readiness). Runs in the gRPC tests' process: it drives tritonclient's HTTP and gRPC clients."""

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXPLICIT, TEST_REPO, Daemon, unavailable_reason
from model_builders import double_graph, double_graph_bytes, save_onnx
from serving import call

NO_CONTROL = "explicit model load / unload is not allowed if polling is enabled"
FILE_IS_FIXED = "trace file location can not be updated through network protocol"


def add_sub_inputs(module, a, b):
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def assert_add_sub(client, module, headers=None):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    result = client.infer("add_sub", add_sub_inputs(module, a, b), headers=headers)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def post(daemon, path, document):
    status, _, body = call(f"http://{daemon.url}{path}", json.dumps(document).encode(), method="POST")
    return status, json.loads(body) if body else None


def label_config(label_filename):
    return {"backend": "identity",
            "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4], "label_filename": label_filename}]}


ONNX_CONFIG = {"backend": "onnxruntime", "max_batch_size": 8,
               "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}],
               "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [3]}]}


def test_default_flags_refuse_every_attack(tmp_path):
    victim = tmp_path / "victim.sh"
    victim.write_text("#!/bin/sh\necho safe\n")
    victim.chmod(0o755)
    fresh = tmp_path / "fresh.json"
    d = Daemon("--threads", "1")
    h = httpclient.InferenceServerClient(d.url)
    g = grpcclient.InferenceServerClient(d.grpc_url)
    try:
        # 1. Trace files: the file is the operator's, globally and per model, on both protocols.
        attack = {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "log_frequency": "1"}
        for path in ("/v2/trace/setting", "/v2/models/add_sub/trace/setting"):
            for target in (victim, fresh):
                status, body = post(d, path, {**attack, "trace_file": str(target)})
                assert (status, body) == (501, {"error": FILE_IS_FIXED})
        for model in ("", "add_sub"):
            with pytest.raises(InferenceServerException, match=FILE_IS_FIXED) as e:
                g.update_trace_settings(model_name=model, settings={**attack, "trace_file": str(fresh)})
            assert e.value.status() == "StatusCode.UNIMPLEMENTED"
        # Without a trace file from the operator, tracing cannot be turned on at all.
        status, body = post(d, "/v2/trace/setting", attack)
        assert status == 400 and "--trace-file" in body["error"]
        assert h.get_trace_settings()["trace_level"] == ["OFF"]
        for _ in range(3):
            assert_add_sub(h, httpclient)

        # 2 and 3. No loads (a label file read back, a model replaced) and no unloads.
        reader = json.dumps(label_config("/etc/passwd"))
        replacement = {"file:1/model.onnx": double_graph_bytes()}
        for client, unavailable in ((h, "503"), (g, "StatusCode.UNAVAILABLE")):
            for attempt in (lambda: client.load_model("reader", config=reader),
                            lambda: client.load_model("add_sub", config=json.dumps(ONNX_CONFIG), files=replacement),
                            lambda: client.load_model("add_sub"),
                            lambda: client.unload_model("add_sub")):
                with pytest.raises(InferenceServerException, match=NO_CONTROL) as e:
                    attempt()
                assert e.value.status() == unavailable
        # 4. No shared memory: nothing of the host's /dev/shm can be mapped.
        shm_object = Path(f"/dev/shm/tensord-security-{os.getpid()}")
        shm_object.write_bytes(b"\0" * 64)
        try:
            for client in (h, g):
                with pytest.raises(InferenceServerException, match="Client shared memory is disabled"):
                    client.register_system_shared_memory("r", f"/{shm_object.name}", 64)
        finally:
            shm_object.unlink()
        assert h.get_system_shared_memory_status() == []
        assert h.is_server_ready() and g.is_server_ready()
        shipped = sorted(p.name for p in TEST_REPO.iterdir() if p.is_dir())
        assert [m["name"] for m in h.get_model_repository_index()] == shipped
        assert_add_sub(h, httpclient)
        assert_add_sub(g, grpcclient)
    finally:
        h.close()
        g.close()
        d.stop()
    assert victim.read_text() == "#!/bin/sh\necho safe\n" and victim.stat().st_mode & 0o777 == 0o755
    assert not fresh.exists()
    assert list(tmp_path.iterdir()) == [victim]


def test_explicit_mode_keeps_config_paths_inside_the_model_folder(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(TEST_REPO, repo)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/sh\n")
    # On disk: a label file that is a link out of its model's folder.
    (repo / "linked").mkdir()
    (repo / "linked" / "labels.txt").symlink_to(secret)
    (repo / "linked" / "config.pbtxt").write_text("""
        backend: "identity"
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
    """)
    staging = tmp_path / "staging"
    staging.mkdir()
    d = Daemon("--threads", "1", *EXPLICIT, "--load-staging-dir", str(staging), repo=repo)
    h = httpclient.InferenceServerClient(d.url)
    try:
        reason = unavailable_reason(h, "linked")
        assert "key 'label_filename'" in reason and "inside the model's folder" in reason

        # Over the load API: refused with a 400 naming the key, in the same words whether or
        # not the target exists, and nothing of the file comes back. The model keeps serving.
        words = set()
        targets = ["/etc/passwd", "/etc/no-such-file", "../../../../etc/passwd", "../../../../etc/no-such-file",
                   "/proc/self/environ", str(secret), str(tmp_path / "missing.txt"), "labels/../../x"]
        for target in targets:
            with pytest.raises(InferenceServerException) as e:
                h.load_model("identity", config=json.dumps(label_config(target)))
            assert e.value.status() == "400", str(e.value)
            message = e.value.message()
            assert "key 'label_filename'" in message and "root:" not in message, message
            words.add(message.replace(target, "TARGET"))
        assert len(words) == 1, words
        assert h.is_model_ready("identity")
        assert "label_filename" not in json.dumps(h.get_model_config("identity"))

        # The model file too: default_model_filename cannot name a file outside.
        evil = tmp_path / "evil.onnx"
        evil.write_bytes(double_graph_bytes())
        files = {"file:1/model.onnx": double_graph_bytes()}
        for name in (str(evil), "../../evil.onnx", "../evil.onnx"):
            config = {**ONNX_CONFIG, "default_model_filename": name}
            with pytest.raises(InferenceServerException, match="key 'default_model_filename'") as e:
                h.load_model("graph", config=json.dumps(config), files=files)
            assert e.value.status() == "400"

        # Staged files: a private folder per load, gone after success and after failure, and
        # no host path or process id in any error.
        h.load_model("graph", config=json.dumps(ONNX_CONFIG), files=files)
        x = np.array([[1, 2, 3]], dtype=np.float32)
        inp = httpclient.InferInput("x", [1, 3], "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(h.infer("graph", [inp]).as_numpy("y"), x * 2)
        assert list(staging.iterdir()) == []
        for broken in ({"file:1/model.onnx": b"not an onnx graph"}, {"file:2/model.onnx": b"x"}):
            with pytest.raises(InferenceServerException) as e:
                h.load_model("graph", config=json.dumps(ONNX_CONFIG), files=broken)
            message = e.value.message()
            assert "model 'graph'" in message, message
            for leak in (str(staging), "tensord-load", f"tensord-{d.proc.pid}", str(tmp_path)):
                assert leak not in message, message
            assert list(staging.iterdir()) == []
        # The model that served before the failed loads still serves.
        np.testing.assert_array_equal(h.infer("graph", [inp]).as_numpy("y"), x * 2)
    finally:
        h.close()
        d.stop()
    assert list(staging.iterdir()) == []


def test_explicit_mode_loads_what_it_is_told_and_readiness_follows(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(TEST_REPO, repo)
    (repo / "broken").mkdir()
    (repo / "broken" / "config.toml").write_text('backend = "nope"\n')
    d = Daemon("--threads", "1", "--model-control-mode", "explicit", "--load-model", "add_sub", repo=repo)
    h = httpclient.InferenceServerClient(d.url)
    try:
        index = {m["name"]: m for m in h.get_model_repository_index()}
        assert index["add_sub"]["state"] == "READY"
        assert index["identity"] == {"name": "identity", "state": "UNAVAILABLE", "reason": "unloaded"}
        assert h.is_server_ready()
        h.load_model("identity")
        assert h.is_model_ready("identity")
        # A failed load of a new model makes the server not ready until it is unloaded
        # (Triton's strict readiness).
        with pytest.raises(InferenceServerException, match="key 'backend'") as e:
            h.load_model("broken")
        assert e.value.status() == "400"
        assert not h.is_server_ready()
        h.unload_model("broken")
        assert h.is_server_ready()
        h.unload_model("identity")
        assert not h.is_model_ready("identity")
        assert_add_sub(h, httpclient)
    finally:
        h.close()
        d.stop()
    # A --load-model that names no model folder, or one outside explicit mode, stops the start.
    for args, words in ((("--model-control-mode", "explicit", "--load-model", "nope"), "no such model folder"),
                        (("--load-model", "add_sub"), "needs --model-control-mode explicit"),
                        (("--repository-poll-secs", "3"), "needs --model-control-mode poll")):
        with pytest.raises(RuntimeError, match=words):
            Daemon("--threads", "1", *args, repo=repo)


def test_strict_readiness_can_be_turned_off(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(TEST_REPO, repo)
    (repo / "broken").mkdir()
    (repo / "broken" / "config.toml").write_text('backend = "nope"\n')
    for args, ready in (((), False), (("--strict-readiness", "false"), True)):
        d = Daemon("--threads", "1", *args, repo=repo)
        h = httpclient.InferenceServerClient(d.url)
        try:
            assert h.is_server_ready() is ready
            assert h.is_server_live() and not h.is_model_ready("broken")
        finally:
            h.close()
            d.stop()


# Each API group with a header of its own, over both protocols.
GROUPS = ["health", "metadata", "inference", "model-config", "model-repository", "statistics", "trace", "logging"]


def http_ready(daemon, headers):
    """tritonclient's HTTP is_server_ready answers False on any refusal: this raises as its
    other calls do."""
    status, _, body = call(f"http://{daemon.url}/v2/health/ready", headers=headers)
    if status != 200:
        raise InferenceServerException(json.loads(body)["error"], status=str(status))


def group_calls(client, module, health):
    """One call of each restricted group, with the headers (or metadata) given."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    return {
        "health": health,
        "metadata": lambda hd: client.get_model_metadata("add_sub", headers=hd),
        "inference": lambda hd: client.infer("add_sub", add_sub_inputs(module, a, a), headers=hd),
        "model-config": lambda hd: client.get_model_config("add_sub", headers=hd),
        "model-repository": lambda hd: client.get_model_repository_index(headers=hd),
        "statistics": lambda hd: client.get_inference_statistics("add_sub", headers=hd),
        "trace": lambda hd: client.get_trace_settings(headers=hd),
        "logging": lambda hd: client.get_log_settings(headers=hd),
    }


def test_restricted_api_groups_over_http_and_grpc():
    args = []
    for group in GROUPS:
        args += ["--http-restricted-api", f"{group}:{group}-key={group}-secret",
                 "--grpc-restricted-protocol", f"{group}:{group}-key={group}-secret"]
    d = Daemon("--threads", "1", *args, wait_for=None)
    h = httpclient.InferenceServerClient(d.url)
    g = grpcclient.InferenceServerClient(d.grpc_url)
    try:
        for client, module, refused, prefix, words in (
                (h, httpclient, "403", "", "This API is restricted, expecting header '{}'"),
                (g, grpcclient, "StatusCode.UNAVAILABLE", "triton-grpc-protocol-",
                 "This protocol is restricted, expecting header '{}'")):
            health = (lambda hd: http_ready(d, hd)) if client is h else (lambda hd: g.is_server_ready(headers=hd))
            calls = group_calls(client, module, health)
            for group in GROUPS:
                key = f"{prefix}{group}-key"
                other = "health" if group != "health" else "logging"
                for headers in (None, {key: f"{group}-secreT"}, {key: f"{group}-secre"},
                                {f"{prefix}{other}-key": f"{other}-secret"}):
                    with pytest.raises(InferenceServerException) as e:
                        calls[group](headers)
                    assert e.value.status() == refused, (group, headers)
                    assert e.value.message() == words.format(key), e.value.message()
                calls[group]({key: f"{group}-secret"})
        # The header's value is never logged.
    finally:
        h.close()
        g.close()
        log = d.stop()
    assert "secret" not in log


def test_triton_restricted_api_qa():
    """Triton's qa/L0_http/http_restricted_api_test.py, with its server flags, on a model named
    as its: model-repository needs admin-key, inference and metadata need infer-key."""
    d = Daemon("--threads", "1", "--http-restricted-api", "model-repository:admin-key=admin-value",
               "--http-restricted-api", "inference,metadata:infer-key=infer-value")
    client = httpclient.InferenceServerClient(d.url)
    try:
        # test_sanity: other APIs are not restricted.
        client.get_inference_statistics("add_sub")
        client.get_inference_statistics("add_sub", headers={"infer-key": "infer-value"})
        # test_model_repository
        with pytest.raises(InferenceServerException, match="This API is restricted"):
            client.unload_model("add_sub", headers={"infer-key": "infer-value"})
        with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
            client.unload_model("add_sub", headers={"admin-key": "admin-value"})
        # test_metadata
        with pytest.raises(InferenceServerException, match="This API is restricted"):
            client.get_server_metadata()
        client.get_server_metadata({"infer-key": "infer-value"})
        # test_infer
        a = np.ones((1, 16), dtype=np.int32)
        with pytest.raises(InferenceServerException, match="This API is restricted"):
            client.infer("add_sub", add_sub_inputs(httpclient, a, a), headers={"test": "1"})
        client.infer("add_sub", add_sub_inputs(httpclient, a, a), headers={"infer-key": "infer-value"})
    finally:
        client.close()
        d.stop()


def test_restrictions_from_the_config_file(tmp_path):
    config = tmp_path / "tensord.toml"
    config.write_text('model_control_mode = "explicit"\nload_model = ["add_sub", "identity"]\n'
                      'http_restricted_api = ["model-repository:admin-key=a", "trace,logging:ops-key=o"]\n')
    d = Daemon("--threads", "1", "--config", str(config))
    h = httpclient.InferenceServerClient(d.url)
    try:
        with pytest.raises(InferenceServerException, match="expecting header 'admin-key'"):
            h.unload_model("identity")
        h.unload_model("identity", headers={"admin-key": "a"})
        with pytest.raises(InferenceServerException, match="expecting header 'ops-key'"):
            h.get_log_settings()
        assert h.get_log_settings(headers={"ops-key": "o"})["log_info"] is True
    finally:
        h.close()
        d.stop()


def test_poll_mode_follows_the_folder_with_requests_in_flight(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(TEST_REPO, repo)
    save_onnx(repo, "graph", double_graph())
    d = Daemon("--threads", "2", "--model-control-mode", "poll", "--repository-poll-secs", "1", repo=repo)
    failures, stop = [], threading.Event()
    x = np.array([[1, 2, 3]], dtype=np.float32)

    def hammer():
        c = httpclient.InferenceServerClient(d.url)
        inp = httpclient.InferInput("x", [1, 3], "FP32")
        inp.set_data_from_numpy(x)
        while not stop.is_set():
            try:
                assert_add_sub(c, httpclient)
                np.testing.assert_array_equal(c.infer("graph", [inp]).as_numpy("y"), x * 2)
            except Exception as e:  # noqa: BLE001 - every failure is collected and reported
                failures.append(repr(e))
        c.close()

    def wait_until(condition, what):
        deadline = time.time() + 15
        while not condition():
            assert time.time() < deadline, what
            time.sleep(0.1)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    h = httpclient.InferenceServerClient(d.url)
    try:
        # The API is refused in poll mode, as in Triton.
        with pytest.raises(InferenceServerException, match=NO_CONTROL):
            h.load_model("add_sub")
        # A new folder loads.
        (repo / "added").mkdir()
        (repo / "added" / "config.toml").write_text('backend = "builtin"\nbuiltin = "identity"\n')
        wait_until(lambda: h.is_model_ready("added"), "the new folder loaded")
        # A changed config reloads, while requests run on the model.
        (repo / "add_sub" / "config.toml").write_text(
            'backend = "builtin"\nmax_batch_size = 32\n[dynamic_batching]\nmax_queue_delay_microseconds = 50\n')
        wait_until(lambda: h.get_model_config("add_sub")["max_batch_size"] == 32, "the changed config reloaded")
        # A broken new version leaves the old one serving, and the server ready.
        (repo / "graph" / "2").mkdir()
        (repo / "graph" / "2" / "model.onnx").write_bytes(b"not an onnx graph")
        (repo / "graph" / "config.toml").write_text('backend = "onnx"\nversion_policy = { all = true }\n')
        time.sleep(2.5)
        assert h.is_model_ready("graph", "1") and h.is_server_ready()
        with pytest.raises(InferenceServerException, match="is not found"):
            h.get_model_metadata("graph", "2")
        # A removed folder unloads.
        shutil.rmtree(repo / "added")
        wait_until(lambda: not h.is_model_ready("added"), "the removed folder unloaded")
        assert "added" not in [m["name"] for m in h.get_model_repository_index()]
    finally:
        stop.set()
        for t in threads:
            t.join()
        h.close()
        d.stop()
    assert failures == [], failures[:5]
