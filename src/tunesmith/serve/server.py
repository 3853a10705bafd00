"""Starting ``tunesmith serve``: what to serve, the safety checks, the engine, the log, uvicorn.

The base model is loaded once (safetensors only, ``trust_remote_code`` as the project says) and
every adapter is put on it; the untuned base is always served too, under the base's name.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import Config
from tunesmith.errors import ConfigError, UserError
from tunesmith.inference.engine import Engine
from tunesmith.models.load import load_base_model
from tunesmith.models.resolve import resolve_base
from tunesmith.monitor.requestlog import RequestLog
from tunesmith.serve.app import ServerState, create_app, set_opening
from tunesmith.serve.follow import AliasFollower
from tunesmith.serve.metrics import ServerMetrics
from tunesmith.serve.routing import Routing, parse_canary
from tunesmith.serve.served import Served, load_classifier, served_adapter, served_run


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth(host: str, api_key: str | None, no_auth: bool) -> str | None:
    """The API key the server requires, or None where ``--no-auth`` is allowed (loopback only).

    Raises:
        ConfigError: No key, and either ``--no-auth`` was not given or the address is not loopback (exit code 2).
    """
    if api_key:
        return api_key
    if no_auth and is_loopback(host):
        return None
    if no_auth:
        raise ConfigError(f"--no-auth is allowed only on a loopback address, not {host}: anyone who can reach it "
                          "could use the model; set an API key (--api-key or TUNESMITH_API_KEY)")
    raise ConfigError("the server needs an API key: set TUNESMITH_API_KEY (or serve.api_key_env) or pass --api-key; "
                      "on 127.0.0.1 alone, --no-auth serves without one")


@dataclass
class ServeOptions:
    """What ``tunesmith serve`` was asked for beyond the project file."""

    runs: list[str]
    adapters: dict[str, str]
    base: str | None
    host: str
    port: int
    api_key: str | None
    no_auth: bool
    project_dir: Path
    shadow: str | None = None
    canary: str | None = None


def what_to_serve(cfg: Config, opts: ServeOptions) -> tuple[str, list[Served], Config | None]:
    """The base model's name and the adapters to serve on it, with the first run's config.

    Raises:
        UserError: A run or adapter cannot be served, or runs were trained on different base models.
    """
    served, first = [], None
    extra = list(dict.fromkeys(r for r in (opts.shadow, (opts.canary or "").rpartition(":")[0] or None)
                               if r and r not in opts.runs))
    if extra and not opts.runs:
        raise UserError("--shadow and --canary try a model on the first --run's traffic (e.g. --run production "
                        "--shadow candidate); give --run")
    for ref in [*opts.runs, *extra]:
        one, run_cfg = served_run(ref, cfg.project.runs_dir)
        if first is not None and run_cfg.model.base != first.model.base:
            raise UserError(f"run {one.name} was trained on {run_cfg.model.base}, but run {served[0].name} on "
                            f"{first.model.base}: one server serves adapters of one base model")
        first = first or run_cfg
        served.append(one)
    for name, path in opts.adapters.items():
        served.append(served_adapter(name, Path(path)))
    base = opts.base or (first.model.base if first else cfg.model.base)
    if first is not None and opts.base and opts.base != first.model.base:
        raise UserError(f"--base {opts.base}, but run {served[0].name} was trained on {first.model.base}")
    names = [s.public_name for s in served]
    if len(set(names)) < len(names) or base in names:
        raise UserError(f"two served models have the same name ({', '.join(names)}, base {base}); name adapters apart")
    return base, served, first


def build_state(cfg: Config, opts: ServeOptions, status: Callable[[str], None] = print) -> ServerState:
    """Load the base model and adapters, start the engine and the request log.

    Raises:
        ConfigError: No API key where one is needed.
        UserError: Nothing servable.
    """
    api_key = check_auth(opts.host, opts.api_key or os.environ.get(cfg.serve.api_key_env) or None, opts.no_auth)
    admin_key = os.environ.get(cfg.serve.admin_key_env) or api_key
    base, adapters, run_cfg = what_to_serve(cfg, opts)
    model_cfg = (run_cfg or cfg).model
    path = resolve_base(base, status=status)
    lm = load_base_model(path, model_cfg.precision, model_cfg.trust_remote_code)
    metrics = ServerMetrics()
    name = Path(base).name if "/" in base or "\\" in base else base  # a local folder is served by its name
    served: dict[str, Served] = {name: Served(name, info={"base": base, "path": str(path)},
                                              max_seq_len=model_cfg.max_seq_len)}
    engine = Engine(lm, name, cfg.serve.limits.max_batch, cfg.serve.limits.max_queue,
                    on_step=lambda running, waiting: metrics.step(running, waiting, list(served)), thread=False)
    for one in adapters:
        status(f"Loading adapter {one.name} from {one.adapter}")
        if one.head:  # a classification head: a model of its own beside the engine's
            served[one.public_name] = load_classifier(one, path, model_cfg.precision, model_cfg.trust_remote_code)
            continue
        if one.name not in engine.adapters:  # a run served under its id and an alias is loaded once
            engine.load_adapter_now(one.name, one.adapter)
        served[one.public_name] = one.with_tokenizer(lm.tokenizer)
    log = None
    if cfg.serve.log.enabled:
        log_path = cfg.serve.log.path if cfg.serve.log.path.is_absolute() else opts.project_dir / cfg.serve.log.path
        log = RequestLog(log_path, cfg.serve.log.scrub_pii)
    context = int(getattr(lm.model.config, "max_position_embeddings", 0) or 8192)
    state = ServerState(engine, served, cfg.serve, api_key, admin_key, log, cfg.project.runs_dir, context, metrics,
                        base_path=path, precision=model_cfg.precision, trust_remote_code=model_cfg.trust_remote_code)
    for one in served.values():
        if one.classifier is None:
            set_opening(state, one)
    if opts.shadow or opts.canary:
        state.routing = Routing(primary=adapters[0].public_name, shadow=_served_name(opts.shadow, adapters),
                                canary=None if not opts.canary else
                                (_served_name(parse_canary(opts.canary)[0], adapters), parse_canary(opts.canary)[1]))
    return state


def _served_name(ref: str | None, adapters: list[Served]) -> str | None:
    """The served name of a run given as ``ref`` (an alias serves under the alias, a run id under its id)."""
    if ref is None:
        return None
    return next((a.public_name for a in adapters if ref in (a.public_name, a.name, str(a.run.root) if a.run else None)),
                ref)


def shutdown(state: ServerState) -> None:
    """Finish what is in flight (bounded by ``serve.shutdown_seconds``) and flush the log."""
    state.engine.stop(state.config.shutdown_seconds)
    if state.log is not None:
        state.log.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: any free one).

    Raises:
        UserError: The address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_server(state: ServerState, sock: socket.socket, announce: Callable[[dict[str, Any]], None]) -> None:
    """Serve on ``sock`` until SIGTERM or SIGINT; then stop accepting, finish what is in flight, flush the log."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    app = create_app(state, on_shutdown=lambda: shutdown(state))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=int(state.config.shutdown_seconds),
                            access_log=False)
    server = uvicorn.Server(config)

    def http() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            shutdown(state)  # also when uvicorn could not start: the engine loop below must end

    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True  # uvicorn stops accepting, finishes requests in flight, then shuts the engine

    # The engine runs in the main thread (PyTorch's CPU kernels ran a third faster there than in a second
    # thread), HTTP in a thread of its own; so the signals are handled here and passed on to uvicorn.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    thread = threading.Thread(target=http, name="tunesmith-http", daemon=True)
    thread.start()
    follower = AliasFollower(state, status=lambda msg: print(msg, file=sys.stderr, flush=True))
    follower.start(state.config.follow_seconds)
    announce({"url": f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1", "host": host, "port": port,
              "models": list(state.served), "auth": state.api_key is not None,
              "log": str(state.log.path) if state.log else None})
    state.engine.run()
    follower.stop()
    thread.join(state.config.shutdown_seconds + 10)
