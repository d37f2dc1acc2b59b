"""Start a server and wait until it answers: the one helper the tests and the scripts share.

Python: free_port(), wait_until_answers(port, path, timeout, proc), start(cmd, port, path, ...),
stop(proc), logged(proc) for what a started process wrote to its piped stderr, call(url, body,
headers, method, timeout) for one request whose error status is an answer too, and
repository_with_any_identity(path) for servers the tests and load scripts drive.
Shell: `python3 scripts/serving.py PORT [PATH] [TIMEOUT]` waits for a 200 on PATH (without PATH:
for the port to accept a connection) and exits 1 if nothing answers in time.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def repository_with_any_identity(path):
    """The shipped model repository copied to `path`, its identity taking any datatype and shape."""
    shutil.copytree(os.path.join(ROOT, "models"), path, dirs_exist_ok=True)
    shutil.copy(os.path.join(ROOT, "scripts", "any-identity.toml"), os.path.join(path, "identity", "config.toml"))
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(port, path="/v2/health/live", timeout=60, proc=None):
    """Waits until GET `path` on 127.0.0.1:`port` answers 200 (`path` None: until the port accepts
    a connection). Fails at once, with its stderr when piped, if `proc` (one from `start`) exits
    first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            err = logged(proc)
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before answering:\n{err}")
        try:
            if path is None:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered {path or 'a connection'} on port {port} within {timeout} s")


def start(cmd, port, path="/v2/health/live", timeout=60, **popen):
    """Starts `cmd` in a session of its own (so that `stop` reaches its children too) and waits
    until it answers. A piped stderr (text) is read as it comes, for `logged`: a full pipe would
    block the process's next log line, and with it the thread that writes it."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    proc.log = []
    proc.reader = threading.Thread(target=lambda: proc.log.extend(proc.stderr or ()), daemon=True)
    proc.reader.start()
    try:
        wait_until_answers(port, path, timeout, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def logged(proc):
    """What a process from `start` wrote to its piped stderr: so far, or all of it once it has
    exited."""
    if proc.poll() is not None:
        proc.reader.join(5)
    return "".join(proc.log)


def call(url, body=None, headers=None, method=None, timeout=None):
    """One HTTP request; an error status is an answer like any other: (status, headers, body).
    `timeout` None leaves urllib's default."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    limit = {} if timeout is None else {"timeout": timeout}
    try:
        with urllib.request.urlopen(req, **limit) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def stop(proc, timeout=20):
    """SIGTERM to the process and its session, SIGKILL if it has not exited in `timeout` s.
    Returns the exit code."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


if __name__ == "__main__":
    try:
        port = int(sys.argv[1])
        path = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
        wait_until_answers(port, path, float(sys.argv[3]) if len(sys.argv) > 3 else 60)
    except (IndexError, ValueError):
        sys.exit("usage: serving.py PORT [PATH] [TIMEOUT]")
    except RuntimeError as e:
        sys.exit(str(e))
