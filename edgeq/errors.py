"""Errors a user can act on.

Every ``EdgeqError`` carries an exit code from the contract, so the CLI can print
one line and a nightly job can tell "the model regressed" (1) from "the input was
bad" (2) from "the lab is broken" (3). Anything that is not an ``EdgeqError`` is a
bug in edgeq and is shown with its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE = 1
EXIT_BAD_INPUT = 2
EXIT_DEVICE = 3


class EdgeqError(Exception):
    """Root of every error edgeq reports to the user as a single line."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(EdgeqError):
    """A bad option, inventory entry or output location."""


class ModelError(EdgeqError):
    """A model file that cannot be read, converted or loaded."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingExtra(EdgeqError):
    """An optional dependency (an extra such as ``host``) is not installed; the message says how."""


class InputSetError(EdgeqError):
    """An input set that breaks the format rules (see ``edgeq.inputs.inputset``)."""

    def __init__(self, path, problem: str, array: str | None = None):
        self.path = str(path)
        self.array = array
        self.problem = problem
        where = f"{self.path} [{array}]" if array else self.path
        super().__init__(f"{where}: {problem}")


class QuantizedNothing(ModelError):
    """A quantizing policy left every weight tensor as it was."""


class TransportError(EdgeqError):
    """The device could not be reached or a transfer failed."""

    exit_code = EXIT_DEVICE


class RemoteCommandFailed(TransportError):
    """A command on the device exited non-zero; the message shows its tail."""

    def __init__(self, result, tail_lines: int = 10):
        self.result = result
        tail = "\n".join(result.stderr.splitlines()[-tail_lines:])
        super().__init__(
            f"command {result.command!r} on {result.device} exited {result.exit_code}"
            + (f": {tail}" if tail else "")
        )


class CommandNotFound(TransportError):
    """The program to start does not exist on the device."""


class AgentError(TransportError):
    """The device agent reported a failure or stopped answering; ``kind`` is the agent's tag."""

    def __init__(self, message: str, kind: str | None = None):
        self.kind = kind
        super().__init__(message)


class IncompatibleRuntime(AgentError):
    """The device's TFLite runtime cannot load the model."""


class DeviceBusy(TransportError):
    """Another job holds the device's lock (and ``--wait`` ran out): the lab is busy, not the model."""
