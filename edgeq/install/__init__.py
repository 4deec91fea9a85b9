"""``edgeq deploy``: installing an evaluated model at the application's own path, across a fleet.

``evidence`` finds the evaluation that vouches for the model on a device class, ``device`` runs one
device's install (push, atomic switch by the agent, smoke check, restart, health, rollback on a
failure), ``rollout`` takes a fleet through a canary and waves, ``smoke`` builds and judges the
smoke check, ``records`` writes history rows and JUnit. Not the push into edgeq's own store for
runs (``edgeq.devices.deploy``).
"""
