"""xapi, simulated: the behaviour model (model.py) and its wire-level face (pool.py)."""
from simulations.xapi.pool import PoolError, SimulatedPool

__all__ = ["PoolError", "SimulatedPool"]
