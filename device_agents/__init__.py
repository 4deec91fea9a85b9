"""Files that run on devices. ``edgeq_agent/`` is the agent, a package that never imports edgeq; it is
shipped to a device as one reproducible zipapp built by ``zipapp.py`` (``edgeq_agent-<sha12>.pyz``)."""
