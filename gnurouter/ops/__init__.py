"""Operations: what an operator sees and turns, over a narrow read-only view of the router.

The metrics snapshot (`metrics`), the HTTP control endpoint (`controlweb`),
the Prometheus text (`prometheus`) and the packet log (`packetlog`).
"""
