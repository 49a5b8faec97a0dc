"""Restoration methods. One file per method; each is a :class:`bench.methods.base.Method`."""
