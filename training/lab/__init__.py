"""The traffic lab: labeled captures from real protocol stacks in network namespaces.

A lab run builds client / router / server namespaces (10.77.0.0/16, no route out), starts
real servers (DNS, HTTPS with HTTP/1.1 and HTTP/2, HTTP/3 over QUIC, a UDP call relay) in
the server namespace, shapes, drops and delays traffic on the router, and records what the
router's client-facing interface sees while a player emulator runs a seeded session plan
in the client namespace. Entry points: :data:`training.lab.scenarios.SCENARIOS`,
:func:`training.lab.scenarios.plan_session`, :func:`training.lab.generate.generate`.
"""

from __future__ import annotations

__all__: list[str] = []
