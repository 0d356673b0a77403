"""Shared infrastructure with one owner per concern (hashing, atomic I/O, locking, ...)."""
