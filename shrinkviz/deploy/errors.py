"""Why a runtime could not run a model: recorded per runtime, never a crash of the run."""


class LatencyError(RuntimeError):
    """The model failed on the runtime before any timing."""


class LatencyTimeoutError(LatencyError):
    """Preparing the runtime or the first inference did not finish within the timeout."""
