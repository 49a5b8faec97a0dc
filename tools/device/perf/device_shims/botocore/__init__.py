"""Device-only stand-in for botocore (see ../README.md)."""
