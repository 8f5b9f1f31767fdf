"""The errors archbench raises on bad input: one clear message, never a deep traceback."""


class ArchbenchError(Exception):
    """Base of every error archbench raises on purpose (bad input, missing dependency)."""


class CheckpointError(ArchbenchError):
    """A checkpoint that cannot be used. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnknownModelError(ArchbenchError):
    """A model or preset name that is not registered."""


class MissingDependencyError(ArchbenchError):
    """An optional dependency that a requested path needs is not installed."""
