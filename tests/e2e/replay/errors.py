"""The replay's errors and its one log line format."""


class ReplayError(RuntimeError):
    """The stack cannot be applied as registered."""


class UnsupportedInput(ReplayError):
    """A registered input the replay does not apply (so it would be silently lost)."""


def log(msg: str) -> None:
    print(f"replay: {msg}", flush=True)
