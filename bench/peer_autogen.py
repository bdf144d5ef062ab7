"""AutoGen's distributed gRPC runtime as a reference: a host, two worker runtimes, one client runtime.

Runs with the Python of ``bench/peers/.venv-autogen`` (``grpc_refs.ensure_autogen_venv`` makes it),
never the project's: AutoGen pins its own grpcio and protobuf.

    python bench/peer_autogen.py host                                  # GrpcWorkerAgentRuntimeHost
    python bench/peer_autogen.py worker --host ADDR --agent-type echo1 # a GrpcWorkerAgentRuntime with one echo agent
    python bench/peer_autogen.py client --host ADDR --agent-types echo1,echo2 --pids P,P,P ...

The host routes by agent type and refuses a second worker registering a type it already has,
so each worker registers a type of its own and the client alternates between them. Every
request goes client → host → worker → host → client (AutoGen's shape: the host is the broker).
The client runs the same loops as the raw echo (``bench/window.py``), reads the CPU of its own
process and of the ``--pids`` (host, workers) per phase, and prints its figures as one JSON
object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
from autogen_core import AgentId, MessageContext, RoutedAgent, message_handler  # noqa: E402
from autogen_core import try_get_known_serializers_for_type as serializers  # noqa: E402
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime, GrpcWorkerAgentRuntimeHost  # noqa: E402

from bench import window  # noqa: E402

READY_HOST = "autogen host ready on "
READY_WORKER = "autogen worker ready: "
_PAD = "x" * 84  # with the id and the JSON around it, about 100 bytes of payload


@dataclass
class Echo:
    i: int
    pad: str


class EchoAgent(RoutedAgent):
    """A no-op task: returns the message it gets."""

    def __init__(self) -> None:
        super().__init__("echo")

    @message_handler
    async def on_echo(self, message: Echo, ctx: MessageContext) -> Echo:
        return message


async def _until_signal() -> None:
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()


async def host() -> None:
    with socket.socket() as s:  # the host class binds the address it is given: find a free port first
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    h = GrpcWorkerAgentRuntimeHost(address=address)
    h.start()
    await asyncio.sleep(0.2)  # the server starts in the background task just created
    print(f"{READY_HOST}{address}", flush=True)
    await _until_signal()
    await h.stop(grace=1)


async def worker(address: str, agent_type: str) -> None:
    runtime = GrpcWorkerAgentRuntime(host_address=address)
    await runtime.start()
    runtime.add_message_serializer(serializers(Echo))
    await EchoAgent.register(runtime, agent_type, EchoAgent)
    print(f"{READY_WORKER}{agent_type}", flush=True)
    await _until_signal()
    await runtime.stop()


def _cpu_reader(pids: dict[str, int]) -> window.Cpu:
    me = psutil.Process()
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def cpu() -> dict[str, float]:
        t = me.cpu_times()
        out = {"client": t.user + t.system}
        for name, p in procs.items():
            try:
                c = p.cpu_times()
                out[name] = c.user + c.system
            except psutil.Error:
                out[name] = 0.0
        return out

    return cpu


async def client(args: argparse.Namespace) -> dict[str, Any]:
    runtime = GrpcWorkerAgentRuntime(host_address=args.host)
    await runtime.start()
    runtime.add_message_serializer(serializers(Echo))
    recipients = [AgentId(t, "default") for t in args.agent_types.split(",")]

    async def send(i: int) -> asyncio.Task[Any]:
        return asyncio.create_task(_echo(i))

    async def _echo(i: int) -> int:
        reply = await runtime.send_message(Echo(i, _PAD), recipients[i % len(recipients)])
        return reply.i if isinstance(reply, Echo) else -1

    pids = dict(pair.split("=", 1) for pair in args.pids.split(",")) if args.pids else {}
    cpu = _cpu_reader({k: int(v) for k, v in pids.items()})
    started = time.monotonic()
    try:
        out = await window.measure("autogen", send, cpu, latency_n=args.latency_n, n=args.n,
                                   windows=tuple(int(x) for x in args.windows.split(",")), budget_s=args.budget,
                                   timeout=args.timeout, warmup=args.warmup,
                                   log=lambda text: print(text, file=sys.stderr, flush=True))
    finally:
        await runtime.stop()
    import autogen_core
    import grpc

    out["config"] = {"autogen_core": getattr(autogen_core, "__version__", None), "grpcio": grpc.__version__,
                     "python": sys.version.split()[0], "agent_types": [r.type for r in recipients],
                     "serialization": "JSON (dataclass)", "route": "client → host → worker → host → client"}
    out["client_seconds"] = round(time.monotonic() - started, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="peer_autogen.py")
    p.add_argument("role", choices=("host", "worker", "client"))
    p.add_argument("--host", help="the host's address (worker, client)")
    p.add_argument("--agent-type", help="worker: the agent type it registers")
    p.add_argument("--agent-types", default="echo1,echo2", help="client: the types to alternate between")
    p.add_argument("--pids", default="", help="client: name=pid,... of the host and workers, for their CPU")
    p.add_argument("--latency-n", type=int, default=300)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--windows", default="64,256,1024")
    p.add_argument("--budget", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--warmup", type=int, default=50)
    args = p.parse_args()
    if args.role == "host":
        asyncio.run(host())
    elif args.role == "worker":
        asyncio.run(worker(args.host, args.agent_type))
    else:
        print(json.dumps(asyncio.run(client(args))), flush=True)


if __name__ == "__main__":
    main()
