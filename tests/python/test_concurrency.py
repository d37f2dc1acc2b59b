"""Many clients at once: every answer carries exactly its own request's values."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.http as httpclient


def worker(url, seed, rounds=50):
    rng = np.random.default_rng(seed)
    client = httpclient.InferenceServerClient(url, network_timeout=60)
    try:
        for i in range(rounds):
            rows = int(rng.integers(1, 5))
            a = rng.integers(-1000, 1000, size=(rows, 16), dtype=np.int32)
            b = rng.integers(-1000, 1000, size=(rows, 16), dtype=np.int32)
            binary = bool(i % 2)
            ins = []
            for name, arr in (("INPUT0", a), ("INPUT1", b)):
                inp = httpclient.InferInput(name, list(arr.shape), "INT32")
                inp.set_data_from_numpy(arr, binary_data=binary)
                ins.append(inp)
            outs = [httpclient.InferRequestedOutput(n, binary_data=not binary) for n in ("OUTPUT0", "OUTPUT1")]
            result = client.infer("add_sub", ins, outputs=outs, request_id=f"{seed}-{i}")
            assert result.get_response()["id"] == f"{seed}-{i}"
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
        return rounds
    finally:
        client.close()


def test_64_concurrent_clients(url):
    with ThreadPoolExecutor(max_workers=64) as pool:
        done = list(pool.map(lambda s: worker(url, s), range(64)))
    assert sum(done) == 64 * 50
