"""Ask a device what it has: start the agent and say hello."""

from __future__ import annotations

from edgeq.agent_client import AgentSession
from edgeq.deploy import Deployer
from edgeq.devices import Device, connect
from edgeq.errors import EdgeqError


def probe_device(device: Device) -> dict:
    """Facts about the device, with ok=False and the error instead of raising."""
    try:
        with connect(device) as transport:
            agent = Deployer(transport, device.workdir).push_agent()
            with AgentSession(transport, device.python, agent) as session:
                facts = session.request("hello", timeout=60)
    except EdgeqError as exc:
        return {"ok": False, "error": str(exc)}
    facts["ok"] = "runtime_error" not in facts
    if not facts["ok"]:
        facts["error"] = facts["runtime_error"]
    return facts
