"""Live router mode: :mod:`~classifier.live.router` is the loop that wires capture, flows,
features, the model and enforcement; :mod:`~classifier.live.sessions` keeps the session
windows incrementally, :mod:`~classifier.live.state` what the API and web pages read,
:mod:`~classifier.live.report` its log lines, :mod:`~classifier.live.memory` its malloc
settings and :mod:`~classifier.live.recording` records a client's own traffic.

Nothing is imported here: the API imports the state alone, without the loop.
"""
