"""Emulators of the external systems, one folder per system. Part of the product: anyone can run
and test the whole system with no account and no internet. An emulator imports nothing of the engine.
"""
