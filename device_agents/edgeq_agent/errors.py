"""How the agent fails and logs: AgentFailure becomes {"ok": false} on the wire; logs go to stderr."""

import sys


class AgentFailure(Exception):
    """A failure reported to the host as {"ok": false}; kind names the class of problem."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def log(message):
    sys.stderr.write("edgeq-agent: %s\n" % message)
    sys.stderr.flush()
