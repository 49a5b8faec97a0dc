"""Device-only stand-in for botocore.exceptions (see ../README.md)."""


class ClientError(Exception):
    """Never raised by the shim; exists so that ``from botocore.exceptions import ClientError`` works."""
