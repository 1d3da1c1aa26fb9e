"""The agent's stream endpoint, for Kova's API component only: the HTTPS
server with mutual TLS (:mod:`~kova.agents.stream.server`: console and VNC
websockets, the console log, power actions) and the shared serial console and
VNC sockets of the domains (:mod:`~kova.agents.stream.console`)."""
