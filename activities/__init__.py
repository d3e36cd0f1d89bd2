"""Adapters for the outside systems a service's life touches.

One module per system (billing, mail, hypervisor, registrar, hosting platform). Each holds the
`...Input`/`...Result` models its activities take, a small `Protocol` for the outside system,
at least one implementation, and an activities class that receives an implementation, so tests
and the simulator pass a recording one and production passes the real one.
"""
