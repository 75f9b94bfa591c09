"""A private single-machine Ray instance that listens on loopback only and requires Ray's token.

Measured with Ray 2.60 on Linux (``ss -ltnp`` of every Ray process): ``ray.init(_node_ip_address=
"127.0.0.1")`` alone does not keep Ray local. Ray rewrites a loopback node address to the
machine's external one (``services.resolve_ip_for_localhost``), so the GCS, the raylet (node and
object manager) and every worker's gRPC server listen on ``::`` (all interfaces) and the
runtime-env agent on the external address. Ray's own single-machine switch,
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the mode Ray uses on macOS/Windows to avoid firewall
prompts), keeps the node address on loopback, and then every server binds it. Because a future
Ray may bind differently, `local_ray` lists the listening sockets of the processes it started and
refuses to run anything if one is beyond loopback.

Token auth (``RAY_AUTH_MODE=token``) stays on, as it is by default in Ray >= 2.5x: any process on
the machine can reach loopback, so the token, fresh for each instance and passed to Ray's
processes through the environment (``RAY_AUTH_TOKEN``, so nothing is written to
``~/.ray/auth_token``), is what stops another local user from submitting tasks.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alignlab.errors import ConfigError

# Token auth arrived in Ray 2.52 (docs.ray.io: ray-security/token-auth).
MIN_RAY = (2, 52)

# Ray's switch that keeps the node address on loopback (see the module docstring).
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def ray_listeners(pids: set[int] | None = None) -> list[tuple[str, int, int, str]]:
    """Listening TCP sockets ``(host, port, pid, process name)`` of this process and its
    descendants (Ray's GCS, raylet, agents and workers), or of ``pids``."""
    import psutil

    if pids is None:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
    else:
        procs = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
    out = []
    for proc in procs:
        try:
            name = proc.name()
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that exited while we looked holds no socket
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                out.append((str(c.laddr.ip), int(c.laddr.port), proc.pid, name))
    return sorted(out)


def _exposed(before: set[tuple[str, int, int, str]]) -> list[str]:
    # Sockets this process held before Ray started are not Ray's (a notebook, a viewer).
    return [
        f"{host}:{port} ({name}, pid {pid})"
        for host, port, pid, name in ray_listeners()
        if (host, port, pid, name) not in before and not is_loopback(host)
    ]


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _settings_seen_by_imported_ray() -> Iterator[None]:
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when ray._private.ray_constants is first
    # imported, and RAY_AUTH_MODE and the token into C++ caches; if the caller imported Ray
    # before us the environment alone comes too late (measured: the driver then sends no token
    # and the new GCS refuses it). So the constant is set for the duration, and the caches are
    # reloaded the way Ray's own `_enable_token_auth` does, on entry and again on exit (giving
    # the caller's later Ray use its own settings back). The listener and auth-mode checks in
    # `local_ray` catch a Ray that moved any of these.
    constants: Any = sys.modules.get("ray._private.ray_constants")
    saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if saved is not None:
        constants.ENABLE_RAY_CLUSTER = False
    _reload_auth_caches()
    try:
        yield
    finally:
        if saved is not None:
            constants.ENABLE_RAY_CLUSTER = saved


def _reload_auth_caches() -> None:
    raylet: Any = sys.modules.get("ray._raylet")
    if raylet is None:
        return
    if hasattr(raylet, "Config"):
        raylet.Config.initialize("")
    if hasattr(raylet, "AuthenticationTokenLoader"):
        raylet.AuthenticationTokenLoader.instance().reset_cache()


def _token_auth_on() -> bool | None:
    """Whether this process runs Ray with token auth (None: this Ray cannot say)."""
    raylet: Any = sys.modules.get("ray._raylet")
    if not hasattr(raylet, "get_authentication_mode") or not hasattr(raylet, "AuthenticationMode"):
        return None
    return bool(raylet.get_authentication_mode() == raylet.AuthenticationMode.TOKEN)


def import_ray() -> Any:
    """The ``ray`` module, or a one-line ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray backend needs Ray: pip install 'alignlab[ray]' (or use --backend process)"
        ) from None
    return ray


@contextmanager
def local_ray(num_cpus: int) -> Iterator[Any]:
    """Start a private Ray instance on this machine, loopback-only and token-protected; yield the
    ``ray`` module and shut the instance down on exit.

    Raises:
        ConfigError: Ray is missing or older than `MIN_RAY`, or the started instance listens
            beyond loopback or runs without token auth (it is shut down before any task runs).
    """
    env = {
        _SINGLE_MACHINE: "0",
        "RAY_AUTH_MODE": "token",
        # One token per process: Ray's C++ side caches the token it loads.
        "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or _process_token(),
        "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0"),
    }
    with _environ(env):
        ray = import_ray()
        if _version(ray.__version__) < MIN_RAY:
            raise ConfigError(
                f"Ray {ray.__version__} has no token auth; the ray backend needs Ray >= "
                f"{'.'.join(map(str, MIN_RAY))}: pip install -U 'alignlab[ray]'"
            )
        before = set(ray_listeners())
        try:
            with _settings_seen_by_imported_ray():
                ray.init(
                    num_cpus=num_cpus,
                    _node_ip_address="127.0.0.1",
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
                try:
                    _refuse_if_exposed(ray, before)
                    yield ray
                finally:
                    ray.shutdown()
        finally:
            _reload_auth_caches()  # with the caller's environment back


def _refuse_if_exposed(ray: Any, before: set[tuple[str, int, int, str]]) -> None:
    exposed = _exposed(before)
    if exposed:
        raise ConfigError(
            f"Ray {ray.__version__} listens beyond loopback ({', '.join(exposed)}); refusing to "
            "run on it. Start Ray yourself with token auth (README, Ray) and pass --ray-address, "
            "or use --backend process"
        )
    if _token_auth_on() is False:
        raise ConfigError(
            f"Ray {ray.__version__} started without token auth despite RAY_AUTH_MODE=token; "
            "refusing to run on it"
        )


@functools.cache
def _process_token() -> str:
    return secrets.token_hex(32)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in text.split(".")[:2])
