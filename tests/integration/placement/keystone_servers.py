"""Run by the Keystone virtualenv's python (``hack/install-keystone.sh``),
not by pytest: a real Keystone, or keystonemiddleware's auth_token in front
of Kova Placement, each as a small WSGI server on loopback.

    python keystone_servers.py keystone PORT KEYSTONE_CONF
    python keystone_servers.py proxy PORT KEYSTONE_URL PLACEMENT_URL

The proxy is what a cloud puts in front of Placement: auth_token validates
the token with Keystone (with delay_auth_decision, so a request without a
valid token still reaches Placement, marked ``X-Identity-Status: Invalid``,
and Placement answers the 401), strips identity headers a client sent
itself, sets ``X-User-Id``/``X-Project-Id``/``X-Roles``/... and forwards the
request to Kova unchanged otherwise.
"""

from __future__ import annotations

import os
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "content-length", "host"}


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _forwarder(placement_url: str):
    import httpx

    client = httpx.Client(base_url=placement_url, timeout=30)

    def app(environ, start_response):
        headers = {key[5:].replace("_", "-").lower(): value
                   for key, value in environ.items()
                   if key.startswith("HTTP_") and value is not None}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        path = environ.get("PATH_INFO", "/")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        headers = {k: v for k, v in headers.items() if k not in HOP}
        resp = client.request(environ["REQUEST_METHOD"], path, headers=headers, content=body)
        out = [(k, v) for k, v in resp.headers.items() if k.lower() not in HOP]
        start_response(f"{resp.status_code} {resp.reason_phrase}", out)
        return [resp.content]

    return app


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "keystone":
        os.environ["OS_KEYSTONE_CONFIG_FILES"] = sys.argv[3]
        sys.argv = sys.argv[:1]  # keystone's oslo.config reads the command line
        from keystone.wsgi.api import application
    else:
        keystone_url, placement_url = sys.argv[3], sys.argv[4]
        sys.argv = sys.argv[:1]
        from keystonemiddleware import auth_token

        application = auth_token.AuthProtocol(_forwarder(placement_url), {
            "www_authenticate_uri": keystone_url, "auth_url": keystone_url,
            "auth_type": "password", "username": "admin", "password": "secret",
            "project_name": "admin", "user_domain_id": "default",
            "project_domain_id": "default", "delay_auth_decision": "true",
            "service_token_roles_required": "false", "log_name": "auth_token"})
    server = make_server("127.0.0.1", port, application, server_class=_Threading,
                         handler_class=_Quiet)
    server.serve_forever()


if __name__ == "__main__":
    main()
