"""The one exception type that reaches the user as a one-line message instead of a traceback."""


class CnnbenchError(Exception):
    """A problem the user can fix: bad config value, missing data, unusable checkpoint."""
