"""GET /openapi.json and GET /docs: the document and swagger-ui over it, offline.

swagger-ui's files come from the `swagger-ui-bundle` wheel (no CDN): `/docs/static/...`
serves them from the installed package, and `/docs` is a small page of ours that loads
them and points them at `/openapi.json`. The document is built once, at start-up.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from gateway.config.document import GatewaySpec
from gateway.web.openapi import openapi_document

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>fanout API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head><body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script><script>
SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", deepLinking: true});
</script></body></html>"""


def docs_routes(spec: GatewaySpec) -> list[BaseRoute]:
    """`/openapi.json`, `/docs` and swagger-ui's static files."""
    document = orjson.dumps(openapi_document(spec))

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(_PAGE)

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui"),
    ]
