"""What every emulator shares: fault knobs, request counters, the state file, serving (with TLS).

Generic only: no system's shapes or errors live here, and it imports nothing of the engine.
"""
