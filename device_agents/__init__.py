"""Files that run on devices. ``edgeq_agent.py`` is uploaded as one file; it never imports edgeq."""
