"""Twisted at the edge: sockets, timers and the service that wires a router together.

The TCP protocol and factories (`network`), the router as a Twisted service
(`service`), a minimal servent for tests and tools (`servent`), and the
garbage-collector settings of a serving process (`gctuning`).
"""
