"""Routing, free of I/O: where each message goes, or why it goes nowhere.

`router` decides (one `Decision` per message), `decisions` holds the rules
and the decision type, `tables` the route tables, pong cache and token
buckets, `neighbours` what is kept per neighbour (role, Hops-Flow, QRP), and
`roles` the neighbour roles.
"""
