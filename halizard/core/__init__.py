"""The decision core: plain data and pure functions. Nothing here touches time, randomness,
sockets, processes, threads or XenAPI (tests/test_architecture.py enforces it)."""
