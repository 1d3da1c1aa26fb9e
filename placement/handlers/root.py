"""GET /: version discovery."""

from kova.placement import microversion
from kova.placement.request import cache_headers, json_response


def home(req):
    return json_response({"versions": [{
        "id": "v1.0",
        "max_version": microversion.max_version_string(),
        "min_version": microversion.min_version_string(),
        "status": "CURRENT",
        "links": [{"rel": "self", "href": ""}],
    }]}, 200, cache_headers(req))
