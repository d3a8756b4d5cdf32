"""The exception types for bad user input."""


class UserError(Exception):
    """Bad input at the boundary (config, files, command line).

    The message is one sentence that says what was wrong and what to do. Scripts
    print it without a traceback and exit non-zero.
    """


class UnreadableImage(UserError):
    """An image file that exists but does not decode (corrupt or truncated).

    The loaders skip a record whose image raises it, with a warning
    (`jaxvision.data.loader`); anywhere else it is a UserError like any other.
    """
