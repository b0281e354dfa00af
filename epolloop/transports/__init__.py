"""Transports: the objects that turn readiness into protocol calls (stream.py: TCP and Unix)."""
