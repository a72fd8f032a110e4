"""The two-host lab: two real halizard daemons on a real (namespaced) network beside one
simulated xapi pool. See simulations/lab/README.md for the design and the commands.

This package file stays free of imports: the ``xl`` shim (simulations/lab/xl.py) is started by
the daemon every cycle and must start fast.
"""
