"""Kernel backends. ``backends.linux`` is the real one; the simulated twin lives in ``sim``."""
