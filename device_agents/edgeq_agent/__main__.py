"""The agent's entry point: ``main(argv)``.

No arguments: serve the protocol on stdin/stdout (protocol.py). ``soak JOB``: a detached soak
(soak.py). ``sample CONFIG``: a run's or a soak's sensor sampler (sampling.py). ``receive``: files pushed
on stdin, written, hashed and renamed in one pass (receive.py). The zipapp's root
``__main__.py`` calls ``main``; ``python -m device_agents.edgeq_agent`` runs it from the source tree.
"""

import os
import sys

from .protocol import Agent
from .receive import receive_main
from .sampling import sample_main
from .soak import soak_main


def main(argv):
    if argv[:1] == ["soak"] and len(argv) == 2:  # detached: no protocol stream, status files only
        return soak_main(argv[1])
    if argv[:1] == ["sample"] and len(argv) == 2:  # the sensor sampler of a run, as its own process
        return sample_main(argv[1])
    if argv == ["receive"]:  # a push's receiving end, on a channel of its own beside the protocol session
        return receive_main()
    # The protocol owns the real stdout; anything a runtime prints goes to stderr.
    protocol_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return Agent(protocol_out).serve(sys.stdin)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
