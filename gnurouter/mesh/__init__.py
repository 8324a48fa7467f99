"""The mesh: who our neighbours are and how we meet them.

Peers and their table (`peers`), what we say in handshakes and whom we take
(`handshaking`), the servents we know of (`hostcache`), and how we find more
(`bootstrap`, GWebCaches).
"""
