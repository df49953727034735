"""The one error type for bad stack config: a key path and a reason.

Shaped like Synapse's own ConfigError: the message names the key exactly as the
operator wrote it (`synapse:workers.rooms`), so they can find it in their stack file.
"""

from __future__ import annotations


class ConfigError(Exception):
    def __init__(self, path: tuple[str | int, ...], reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(str(self))

    @property
    def key(self) -> str:
        out = "synapse:"
        for i, part in enumerate(self.path):
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += part if i == 0 else f".{part}"
        return out

    def __str__(self) -> str:
        return f"Error in configuration at '{self.key}': {self.reason}"
