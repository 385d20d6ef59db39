"""Typed errors the engine raises; the CLI and the TUI turn them into one-line messages."""


class FcError(Exception):
    """A user-facing error: its message is one line naming the file, key or value at fault."""


class ProfileError(FcError):
    """A profile file is missing, unreadable or does not validate."""


class DataError(FcError):
    """Source data, a corpus or a shard is missing, malformed or does not match."""


class TokenizerError(FcError):
    """A tokenizer is missing, failed to train or does not match what was expected."""


class ShardError(DataError):
    """A shard file has a bad header, is truncated, or was made with another tokenizer."""


class ModelError(FcError):
    """A model shape is invalid, or weights do not fit the shape they are loaded into."""


class QueueError(FcError):
    """queue.toml is malformed, or a queue operation is not allowed in an entry's state."""


class SupervisorError(FcError):
    """The detached supervisor could not be started or a trainer could not be spawned."""


class RunError(FcError):
    """A run folder, its stage.toml or a checkpoint is missing, malformed or does not match."""


class ControlError(FcError):
    """A run's control.toml is malformed or asks for something the run cannot do."""
