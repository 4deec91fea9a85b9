"""Devices: the inventory, transports (local subprocess, SSH), pushing files and the
agent, talking to the agent, runs, fleets, setup, probes and soaks. Everything that
touches a board lives here; nothing here judges results."""
