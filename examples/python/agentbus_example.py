"""Subscribes, publishes, receives and acks, answers requests and makes one (agentbus gateway).

Usage: AGENTBUS_WS_URL=ws://127.0.0.1:8080/v1/ws [AGENTBUS_TOKEN=...] [AGENTBUS_PREFIX=demo] \
       python3 agentbus_example.py
Prints one JSON line with what it saw; exits 1 on failure.
"""

import asyncio
import json
import os
import sys

from agentbus_client import AgentBusClient, AgentBusError


async def main() -> int:
    url = os.environ.get("AGENTBUS_WS_URL", "ws://127.0.0.1:8080/v1/ws")
    prefix = os.environ.get("AGENTBUS_PREFIX", "demo")
    count = int(os.environ.get("AGENTBUS_COUNT", "3"))
    async with AgentBusClient(url, token=os.environ.get("AGENTBUS_TOKEN")) as bus:
        received = []
        all_in = asyncio.Event()

        async def on_task(msg):
            received.append({"n": msg.data["n"], "attempt": msg.attempt})
            if len(received) == count:
                all_in.set()

        await bus.subscribe(f"{prefix}.tasks", on_task, prefetch=8)

        async def on_rpc(msg):
            await msg.reply({"doubled": msg.data["x"] * 2})

        await bus.subscribe(f"{prefix}.rpc", on_rpc)

        ids = [await bus.publish(f"{prefix}.tasks", {"n": n}, type="demo.task") for n in range(count)]
        await asyncio.wait_for(all_in.wait(), timeout=10)
        reply = await bus.request(f"{prefix}.rpc", {"x": 21}, timeout_ms=5000)
        try:
            await bus.publish(f"{prefix}.tasks", {"n": -1}, priority="high")
            refused = None
        except AgentBusError as err:
            refused = err.code
        await bus.ping()
        print(json.dumps({"published": ids, "received": received, "reply": reply, "refused": refused}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except Exception as err:  # report and fail
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        sys.exit(1)
