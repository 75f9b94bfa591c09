"""The sweep's private Ray instance (``--backend ray`` without ``--ray-address``) listens on
loopback only and requires its auth token (issue 15).

Before the fix (Ray 2.60, ``ray.init(_node_ip_address="127.0.0.1")`` with auth disabled) the GCS,
the raylet, the driver and every worker listened on ``::`` and the runtime-env agent on the
machine's external address, so these tests look at the sockets Ray's processes really hold.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alignlab.errors import ConfigError
from alignlab.scaling import _ray

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (the optional `ray` extra: pip install 'alignlab[ray]')",
)

# Runs in a fresh interpreter, as `alignlab sweep --backend ray` does: Ray's processes are then
# this child's descendants, and no Ray state leaks into the test process.
_CHILD = """
import json, os
from alignlab.scaling._ray import _token_auth_on, local_ray, ray_listeners

with local_ray(1) as ray:
    @ray.remote(num_cpus=1)
    def pid():
        return os.getpid()

    workers = [ray.get(pid.remote())]
    print(json.dumps({
        "listeners": ray_listeners(), "workers": workers, "driver": os.getpid(),
        "token_auth": _token_auth_on(), "gcs": ray.get_runtime_context().gcs_address,
    }))
"""


def _start_in_child(home: Path, script: str = _CHILD) -> dict[str, Any]:
    # HOME points at a scratch folder so a token file Ray might write is seen (and not left in
    # the real ~/.ray); RAY_AUTH_* from the caller's shell must not decide the outcome.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= {"HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_ray
def test_local_ray_listens_on_loopback_only_and_requires_a_token(tmp_path: Path) -> None:
    out = _start_in_child(tmp_path)
    listeners = [tuple(x) for x in out["listeners"]]
    by_pid: dict[int, list[str]] = {}
    for host, _port, pid, _name in listeners:
        by_pid.setdefault(pid, []).append(host)
    names = {name for *_, name in listeners}
    # Not vacuous: the servers that listened on :: before the fix are all found and checked.
    assert {"gcs_server", "raylet"} <= names, listeners
    assert out["driver"] in by_pid, listeners
    assert all(w in by_pid for w in out["workers"]), listeners
    exposed = [x for x in listeners if not _ray.is_loopback(x[0])]
    assert exposed == [], exposed
    assert _ray.is_loopback(out["gcs"].rsplit(":", 1)[0].strip("[]"))
    assert out["token_auth"] is True
    # The token travels in the environment of Ray's processes; nothing is written to ~/.ray.
    assert not (tmp_path / ".ray").exists()


@needs_ray
@pytest.mark.slow  # a refused client retries for ~20 s before Ray gives up
def test_local_ray_refuses_clients_without_its_token(tmp_path: Path) -> None:
    script = _CHILD.replace(
        "    print(json.dumps({",
        """    import subprocess, sys
    probe = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False)"
    gcs = ray.get_runtime_context().gcs_address
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    codes = {
        label: subprocess.run([sys.executable, "-c", probe, gcs], env=base | extra,
                              capture_output=True, timeout=120).returncode
        for label, extra in {
            "no_auth": {"RAY_AUTH_MODE": "disabled"},
            "wrong_token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
            "token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.environ["RAY_AUTH_TOKEN"]},
        }.items()
    }
    print(json.dumps({"codes": codes, """,
    )
    codes = _start_in_child(tmp_path, script)["codes"]
    # The holder of the token connects (so the refusals are about the token, not the address).
    assert codes["token"] == 0 and codes["no_auth"] != 0 and codes["wrong_token"] != 0, codes


def test_listener_beyond_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [("127.0.0.1", 4000, 11, "gcs_server"), ("::", 4001, 12, "raylet")]
    monkeypatch.setattr(_ray, "ray_listeners", lambda pids=None: fake)

    class FakeRay:
        __version__ = "9.9.9"

    with pytest.raises(ConfigError, match=r"listens beyond loopback \(:::4001 \(raylet, pid 12\)\)"):
        _ray._refuse_if_exposed(FakeRay, set())
    # A socket the process held before Ray started (a notebook, a viewer) is not Ray's.
    monkeypatch.setattr(_ray, "_token_auth_on", lambda: True)
    _ray._refuse_if_exposed(FakeRay, {fake[1]})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
        ("::ffff:192.0.2.2", False),
        ("localhost", False),  # a name is not an address a socket is bound to
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert _ray.is_loopback(host) is loopback


def test_missing_ray_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    env = dict(os.environ)
    missing = pytest.raises(ConfigError, match=r"needs Ray: pip install 'alignlab\[ray\]'")
    with missing, _ray.local_ray(1):
        pass
    assert dict(os.environ) == env  # the token and Ray switches do not outlive the attempt
