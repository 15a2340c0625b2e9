"""`quiver serve`: start the REST (and gRPC) server; `quiver snapshot ...`: snapshot work
against a running server (api/snapshot_cli.py)."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from typing import Any

from api import snapshot_cli
from api.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quiver", description="Quiver vector search engine")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the Qdrant-compatible REST and gRPC server")
    s.add_argument("--config-path", help="YAML config file (default: embedded defaults)")
    s.add_argument("--host", help="listen address (service.host)")
    s.add_argument("--port", type=int, help="listen port (service.http_port)")
    s.add_argument("--grpc-port", type=int,
                   help="gRPC listen port (service.grpc_port; 0 disables gRPC)")
    s.add_argument("--storage-path", help="storage directory (storage.storage_path)")
    s.add_argument("--snapshot", "--collection-snapshot", action="append", default=[],
                   metavar="PATH:NAME", help="recover collection NAME from a snapshot file at "
                   "start-up (repeatable); NAME must not exist unless --force-snapshot")
    s.add_argument("--storage-snapshot", metavar="PATH",
                   help="restore every collection and alias of a full-storage snapshot")
    s.add_argument("--force-snapshot", "--force_snapshot", "-f", action="store_true",
                   help="let start-up snapshots overwrite existing collections")
    snapshot_cli.add_parser(sub)
    return p


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's ssl_* arguments from Qdrant's `service.enable_tls` and `tls:` section."""
    svc, tls = settings.service, settings.tls
    if not svc.enable_tls:
        return {}
    needed = ["cert", "key"]
    if svc.verify_https_client_certificate:
        needed.append("ca_cert")
    for name in needed:  # fail at start-up, not at the first handshake
        path = getattr(tls, name)
        if not path or not os.path.isfile(path):
            raise ValueError(f"service.enable_tls is set but tls.{name} ({path}) is not a file")
    opts: dict[str, Any] = {"ssl_certfile": tls.cert, "ssl_keyfile": tls.key}
    if svc.verify_https_client_certificate:
        opts |= {"ssl_ca_certs": tls.ca_cert, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return opts


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "snapshot":
        return snapshot_cli.main(args)
    overrides: dict[str, dict[str, Any]] = {"service": {}, "storage": {}}
    if args.host:
        overrides["service"]["host"] = args.host
    if args.port:
        overrides["service"]["http_port"] = args.port
    if args.grpc_port is not None:
        overrides["service"]["grpc_port"] = args.grpc_port
    if args.storage_path:
        overrides["storage"]["storage_path"] = args.storage_path
    # configured before loading, so the warning about unknown keys is formatted too
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config_path, overrides=overrides)  # validates every key
        tls = tls_options(settings)
    except (OSError, ValueError) as exc:
        print(f"quiver: cannot load configuration: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(getattr(logging, settings.log_level.upper(), logging.INFO))
    import uvicorn  # noqa: PLC0415 - keep `quiver --help` fast

    from api.app import build_catalog, create_app  # noqa: PLC0415
    from engine.errors import EngineError  # noqa: PLC0415
    from snapshots.recovery import (  # noqa: PLC0415
        Recovery,
        restore_collection_at_startup,
        restore_full,
    )

    catalog = build_catalog(settings)
    catalog.load()
    if args.snapshot or args.storage_snapshot:
        recovery = Recovery(catalog, settings.storage.snapshots_path)
        try:
            if args.storage_snapshot:  # as in Qdrant, it wins over --snapshot
                restored = restore_full(recovery, args.storage_snapshot, args.force_snapshot)
            else:
                restored = [restore_collection_at_startup(recovery, spec, args.force_snapshot)
                            for spec in args.snapshot]
        except (EngineError, OSError) as exc:
            catalog.close()
            print(f"quiver: snapshot recovery failed: {exc}", file=sys.stderr)
            return 1
        logging.getLogger("quiver").info("restored from snapshots: %s", ", ".join(restored))
    app = create_app(settings, catalog=catalog, owns_catalog=True, serve_grpc=True)
    uvicorn.run(app, host=settings.service.host, port=settings.service.http_port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=30, **tls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
