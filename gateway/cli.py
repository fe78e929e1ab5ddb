"""`gateway run | check | schema | demo | keys`: thin commands over the library.

Every user-facing failure is one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from gateway import __version__
from gateway.config.document import document_model
from gateway.config.loader import load_config, load_spec
from gateway.config.settings import Settings
from gateway.config.show import show
from gateway.errors import ConfigError

MAX_PROBLEMS_SHOWN = 50
"""Problems `gateway check` prints; a file with thousands says how many more it has."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gateway` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.command(args)
        return result
    except ConfigError as exc:
        for line in exc.problems[:MAX_PROBLEMS_SHOWN]:
            print(line, file=sys.stderr)
        hidden = len(exc.problems) - MAX_PROBLEMS_SHOWN
        if hidden > 0:
            print(f"... and {hidden} more problems", file=sys.stderr)
        return 1
    except ValidationError as exc:  # settings from the environment
        for error in exc.errors(include_url=False):
            name = "_".join(str(p) for p in error["loc"])
            if not name.isupper():  # a GATEWAY_ setting; OTEL_*, DATABASE_URL are named as is
                name = "GATEWAY_" + name.upper()
            message = error["msg"].removeprefix("Value error, ")
            print(f"environment: {name}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fanout {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve the gateway")
    run.add_argument("--config", required=True, help="routes file (YAML)")
    run.add_argument("--host", help="bind address (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="bind port (default 8080)")
    run.add_argument("--workers", type=int, help="worker processes (default 1)")
    run.add_argument(
        "--watch", action="store_true", help="reload when the routes file changes (development)"
    )
    run.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # an inherited listening socket
    run.set_defaults(command=_run)

    check = commands.add_parser("check", help="validate a routes file")
    check.add_argument("file")
    check.add_argument(
        "--show",
        action="store_true",
        help="print the config as it will run: ${...} expanded, includes merged, secrets masked",
    )
    check.set_defaults(command=_check)

    schema = commands.add_parser("schema", help="print the JSON Schema of the routes file")
    schema.set_defaults(command=_schema)

    openapi = commands.add_parser("openapi", help="print the OpenAPI 3.1 document of a routes file")
    openapi.add_argument("file")
    openapi.set_defaults(command=_openapi)

    demo = commands.add_parser("demo", help="start the demo stack (services + gateway)")
    demo.add_argument(
        "--port", type=int, help="gateway port (default 8080, or the base port when given)"
    )
    demo.add_argument(
        "--base-port",
        type=int,
        help="the services listen on the 5 ports after it (default 8100: 8101-8105)",
    )
    demo.set_defaults(command=_demo)

    keys = commands.add_parser("keys", help="manage the API keys of an api_key authenticator")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("--config", required=True, help="routes file (YAML)")
    keys.add_argument("--auth", required=True, help="the api_key authenticator's name")
    keys.add_argument("--name", help="the key's name (create, revoke); its {auth.sub}")
    keys.add_argument("--scope", action="append", default=[], help="a scope granted (create)")
    keys.add_argument(
        "--meta", action="append", default=[], help="KEY=VALUE: {auth.key.metadata.KEY}"
    )
    keys.set_defaults(command=_keys)
    return parser


def _run(args: argparse.Namespace) -> int:
    from gateway.server.serve import serve

    overrides = {k: v for k in ("host", "port", "workers") if (v := getattr(args, k)) is not None}
    if args.watch:
        overrides["watch"] = True
    spec = load_spec(args.config)  # before uvicorn: a bad file is one line, not a traceback
    os.environ["GATEWAY_CONFIG"] = str(Path(args.config).resolve())  # for worker processes
    settings = Settings(**overrides, config=os.environ["GATEWAY_CONFIG"])
    return serve(spec, settings, fd=args.fd)


def _check(args: argparse.Namespace) -> int:
    loaded = load_config(args.file)
    if args.show:
        sys.stdout.write(show(loaded))
        return 0
    spec = loaded.spec
    calls = sum(len(e.calls) for e in spec.endpoints)
    print(
        f"{args.file}: ok: {len(spec.backends)} backends, {len(spec.endpoints)} endpoints, "
        f"{calls} calls"
    )
    return 0


def schema_text() -> str:
    """The JSON Schema of the routes file, as committed in gateway/schema.json."""
    schema = document_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def _keys(args: argparse.Namespace) -> int:
    from gateway.web.auth.keystore import manage_keys

    if args.action in ("create", "revoke") and not args.name:
        print(f"keys {args.action}: --name is required", file=sys.stderr)
        return 2
    bad = [m for m in args.meta if "=" not in m]
    if bad:
        print(f"keys: --meta {bad[0]!r}: use KEY=VALUE", file=sys.stderr)
        return 2
    metadata = dict(m.split("=", 1) for m in args.meta)
    spec = load_spec(args.config)
    coroutine = manage_keys(
        spec,
        Settings(),
        args.auth,
        args.action,
        name=args.name,
        scopes=args.scope,
        metadata=metadata,
    )
    code: int = asyncio.run(coroutine)
    return code


def _openapi(args: argparse.Namespace) -> int:
    from gateway.web.openapi import openapi_document

    document = openapi_document(load_spec(args.file))
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.devtools.demo import run_demo

    code: int = run_demo(args.port, args.base_port)
    return code
