"""The one error type for bad stack config: a key path and a reason.

Shaped like Synapse's own ConfigError: the message names the key exactly as the
operator wrote it (`synapse:workers.rooms`), so they can find it in their stack file.
A key outside the `synapse:` namespace (`synpase:serverName`, the file's `config`
section) is named with its own `prefix`.
"""

from __future__ import annotations


class ConfigError(Exception):
    def __init__(self, path: tuple[str | int, ...], reason: str, *,
                 prefix: str = "synapse:") -> None:
        self.path = path
        self.reason = reason
        self.prefix = prefix
        super().__init__(str(self))

    @property
    def key(self) -> str:
        out = self.prefix
        for i, part in enumerate(self.path):
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += part if i == 0 else f".{part}"
        return out

    def __str__(self) -> str:
        return f"Error in configuration at '{self.key}': {self.reason}"
