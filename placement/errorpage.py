"""Error replies in the media type the client accepts, as OpenStack
Placement (webob) answers them: JSON when the ``Accept`` header is missing,
is ``*/*`` or prefers ``application/json``, an HTML page when it prefers (or ties on)
``text/html``, plain text when it accepts neither."""

from __future__ import annotations

import html

#: webob's explanation of each status, the first line of every error page.
EXPLANATIONS = {
    400: "The server could not comply with the request since it is either malformed "
         "or otherwise incorrect.",
    401: "This server could not verify that you are authorized to access the document "
         "you requested. Either you supplied the wrong credentials (e.g., bad "
         "password), or your browser does not understand how to supply the credentials "
         "required.",
    403: "Access was denied to this resource.",
    404: "The resource could not be found.",
    405: "The method specified is not allowed for this resource.",
    406: "The resource could not be generated that was acceptable to your browser.",
    409: "There was a conflict when trying to complete your request.",
    415: "The request media type is not supported by this server.",
    500: "The server has either erred or is incapable of performing the requested "
         "operation.",
    503: "The server is currently unavailable. Please try again at a later time.",
}

_OFFERS = ("text/html", "application/json")


def _quality(accept: str, offer: str) -> float:
    """The q value ``accept`` gives ``offer`` (the most specific range wins)."""
    best, best_specificity = 0.0, -1
    kind = offer.split("/")[0]
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for param in fields[1:]:
            if param.lower().startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        specificity = (2 if media == offer else 1 if media == f"{kind}/*"
                       else 0 if media == "*/*" else -1)
        if specificity > best_specificity:
            best, best_specificity = q, specificity
    return best if best_specificity >= 0 else 0.0


def media_type(accept: str | None) -> str:
    """``application/json``, ``text/html`` or ``text/plain`` for an error."""
    if not accept or accept.strip() == "*/*":
        return "application/json"
    scored = [(q, -i, offer) for i, offer in enumerate(_OFFERS)
              if (q := _quality(accept, offer)) > 0]
    if not scored:
        return "text/plain"
    return max(scored)[2]


def page(status: int, title: str, detail: str, ctype: str) -> str:
    explanation = EXPLANATIONS.get(status, "")
    if ctype == "text/html":
        return (f"<html>\n <head>\n  <title>{status} {title}</title>\n </head>\n <body>\n"
                f"  <h1>{status} {title}</h1>\n  {html.escape(explanation)}<br /><br />\n"
                f"{html.escape(detail)}\n\n\n </body>\n</html>")
    return f"{status} {title}\n\n{explanation}\n\n{detail}\n\n"


def webob_json(status: int, title: str) -> dict:
    """webob's own JSON error body (no Placement formatting)."""
    return {"message": EXPLANATIONS.get(status, "") + "<br /><br />\n\n\n",
            "code": f"{status} {title}", "title": title}
