"""The sans-I/O protocol core: bytes in, events out; send calls, bytes out.

Nothing in this package performs I/O, reads a clock, or knows about asyncio or threads. Every API of
shakehands (coroutine, callback, blocking, client) drives the same objects from here.
"""
