"""Transports move bytes and run commands on a device: one class per way of reaching it."""

from edgeq.devices.transport.base import Process, Result, Transfer, Transport

__all__ = ["Process", "Result", "Transfer", "Transport"]
