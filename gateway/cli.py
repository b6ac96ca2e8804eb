"""The ``gateway`` command: serve | export-schema | check. A thin layer over config and app."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from gateway import __version__
from gateway.api import build_schema
from gateway.auth import new_key
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.progress import Progress
from gateway.repository import scan_repository
from gateway.runtime import ModelRuntime
from gateway.telemetry import configure_logging
from gateway.versions import ModelState

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "export-schema":
            return _export_schema(args, sys.stdout)
        if args.command == "new-key":
            return _new_key(args, sys.stdout)
        if args.command == "convert":
            return _convert(args, sys.stdout)
        if args.command == "optimize":
            return _optimize(args, sys.stdout)
        return _check(args, sys.stdout)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Serve ONNX models as a typed GraphQL API."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model repository over HTTP")
    serve.add_argument("--models", type=Path, help="model repository (env GATEWAY_MODELS)")
    serve.add_argument("--host", help="address to bind (env GATEWAY_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (env GATEWAY_PORT)")
    serve.add_argument("--config", type=Path, dest="config_file", help="TOML settings file")
    serve.add_argument("--log-level", help="debug|info|warning|error (env GATEWAY_LOG_LEVEL)")
    serve.add_argument("--log-format", help="json|human (env GATEWAY_LOG_FORMAT)")
    serve.add_argument("--workers", type=int, help="server processes (env GATEWAY_WORKERS)")

    export = commands.add_parser("export-schema", help="print the GraphQL SDL of a repository")
    export.add_argument("--models", type=Path, help="model repository (env GATEWAY_MODELS)")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")

    check = commands.add_parser(
        "check", help="load a repository, run each model once, print a table"
    )
    check.add_argument("path", type=Path, nargs="?", help="model repository (default: models/)")

    convert = commands.add_parser(
        "convert",
        help="convert a trained model into the next version of a repository model",
        description="Convert a trained model to ONNX, check it answers like the original on a "
        "sample, and write it as the next version of a repository model. WARNING: --sklearn "
        "loads a pickle (joblib) file, which runs code from that file, and --torch imports "
        "a Python module, which runs its code: only convert what you trust. The server itself "
        "never loads pickles or imports model code.",
    )
    source = convert.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--sklearn", type=Path, metavar="FILE", help="a joblib/pickle file (runs its code)"
    )
    source.add_argument(
        "--xgboost", type=Path, metavar="FILE", help="an XGBoost model file (save_model)"
    )
    source.add_argument(
        "--lightgbm", type=Path, metavar="FILE", help="a LightGBM model file (save_model)"
    )
    source.add_argument(
        "--torchscript", type=Path, metavar="FILE", help="a TorchScript file (torch.jit.save)"
    )
    source.add_argument(
        "--torch",
        metavar="MODULE:FACTORY",
        help="a PyTorch nn.Module made by calling FACTORY() from MODULE (imports it)",
    )
    convert.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="--torch: a state dict (torch.save), read as tensors only",
    )
    convert.add_argument(
        "--classifier",
        choices=["logits", "probabilities"],
        help="PyTorch: the module's [N, C] output is class scores; serve label + probabilities",
    )
    convert.add_argument("--labels", help="class names by class index, comma-separated")
    convert.add_argument(
        "--sample",
        type=Path,
        required=True,
        help="input data: .csv (with header), .parquet, .npy or .npz (named arrays)",
    )
    convert.add_argument("--name", required=True, help="the model's name in the repository")
    convert.add_argument("--repo", type=Path, default=Path("models"), help="default: models/")
    convert.add_argument("--tolerance", type=float, default=1e-4, help="default: %(default)s")
    convert.add_argument("--description", help="for model.toml")
    convert.add_argument("--json", action="store_true", help="machine-readable output")

    optimize = commands.add_parser(
        "optimize",
        help="write a graph-optimised, int8-quantised or fp16 next version, with its cost",
    )
    optimize.add_argument("--name", required=True, help="the model in the repository")
    optimize.add_argument("--repo", type=Path, default=Path("models"), help="default: models/")
    optimize.add_argument("--version", type=int, help="the source version (default: highest)")
    optimize.add_argument(
        "--sample", type=Path, required=True, help=".csv (with header), .parquet, .npy or .npz"
    )
    optimize.add_argument("--graph", action="store_true", help="ONNX Runtime graph optimisation")
    precision = optimize.add_mutually_exclusive_group()
    precision.add_argument("--int8", choices=["dynamic", "static"], help="int8 quantisation")
    precision.add_argument("--fp16", action="store_true", help="half-precision weights and math")
    optimize.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="largest output error, or label disagreement share (default: %(default)s)",
    )
    optimize.add_argument("--json", action="store_true", help="machine-readable output")

    key = commands.add_parser(
        "new-key", help="make an API key: print it once, and its entry for the keys file"
    )
    key.add_argument("id", help="the key's name (letters, digits, underscores)")
    key.add_argument(
        "--scopes",
        default="predict,metadata",
        help="comma-separated: predict, predict:<model>, metadata, admin (default: %(default)s)",
    )
    return parser


def _convert(args: argparse.Namespace, out: TextIO) -> int:
    def run() -> Any:
        common: dict[str, Any] = {
            "labels": args.labels.split(",") if args.labels else None,
            "tolerance": args.tolerance,
            "description": args.description,
            "progress": Progress(sys.stderr),
        }
        if args.torch is not None or args.torchscript is not None:
            from gateway.pytorch import convert_torch

            return convert_torch(
                args.sample,
                args.repo,
                args.name,
                torchscript=args.torchscript,
                factory=args.torch,
                weights=args.weights,
                classifier=args.classifier,
                **common,
            )
        if args.weights is not None or args.classifier is not None:
            raise ConfigError("--weights and --classifier are for PyTorch modules")
        if args.sklearn is None:
            from gateway.boosting import convert_boosting_file

            framework = "xgboost" if args.xgboost is not None else "lightgbm"
            path = args.xgboost or args.lightgbm
            return convert_boosting_file(
                framework, path, args.sample, args.repo, args.name, **common
            )
        from gateway.convert import convert_sklearn_file

        return convert_sklearn_file(args.sklearn, args.sample, args.repo, args.name, **common)

    def summary(done: Any) -> str:
        return (
            f"wrote {done.path} (model {done.model!r}, version {done.version})\n"
            f"inputs: {', '.join(done.inputs)}; sample rows: {done.rows}\n"
        )

    return _model_step("convert", run, summary, args, out)


def _optimize(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.optimize import optimize_version

    def run() -> Any:
        return optimize_version(
            args.repo,
            args.name,
            args.sample,
            version=args.version,
            graph=args.graph,
            int8=args.int8,
            fp16=args.fp16,
            tolerance=args.tolerance,
            progress=Progress(sys.stderr),
        )

    def summary(done: Any) -> str:
        (size_before, size_after), (speed_before, speed_after) = (
            done.size_bytes,
            done.rows_per_second,
        )
        return (
            f"wrote {done.path}: {done.model} version {done.version} from version "
            f"{done.source_version} ({', '.join(done.steps)})\n"
            f"  {'':24} {'source':>12} {'result':>12}\n"
            f"  {'size (bytes)':24} {size_before:>12} {size_after:>12}\n"
            f"  {'rows/s (same run)':24} {speed_before:>12.0f} {speed_after:>12.0f}\n"
        )

    return _model_step("optimize", run, summary, args, out)


def _model_step(
    command: str,
    run: Callable[[], Any],
    summary: Callable[[Any], str],
    args: argparse.Namespace,
    out: TextIO,
) -> int:
    """Run a convert or optimize step: exit 1 with the reason when parity fails; the report
    as JSON (--json) or a summary and the parity figures."""
    from gateway.convert import ParityError

    try:
        done = run()
    except ParityError as exc:
        print(f"gateway {command}: {exc.message}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # a source, sample or option that does not fit
        print(f"gateway {command}: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        out.write(json.dumps(done.to_json(), indent=2) + "\n")
        return 0
    out.write(summary(done))
    out.write(_parity_table(done.parity))
    return 0


def _parity_table(parity: dict[str, Any]) -> str:
    """The parity figures, one per line: ``probabilities_max_abs_error`` reads as
    ``probabilities max abs error``."""
    tolerance = parity.get("tolerance")
    lines = [f"  {'parity on the sample':36} {'value':>12}"]
    for key, value in parity.items():
        if key == "tolerance":
            continue
        shown = f"{value:.4f}" if key.endswith("agreement") else f"{value:.3g}"
        lines.append(f"  {key.replace('_', ' '):36} {shown:>12}")
    lines.append(f"  {'tolerance':36} {tolerance:>12g}")
    return "\n".join(lines) + "\n"


def _new_key(args: argparse.Namespace, out: TextIO) -> int:
    key, hashed = new_key(args.id)
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    out.write(
        f"# The API key (shown once; the gateway keeps only its hash):\n# {key}\n"
        f'[[keys]]\nid = "{args.id}"\nhash = "{hashed}"\n'
        f"scopes = [{', '.join(repr(s).replace(chr(39), chr(34)) for s in scopes)}]\n"
    )
    return 0


def _settings(**flags: object) -> Settings:
    return Settings.load(environ=os.environ, flags=flags)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app

    settings = _settings(
        models=args.models,
        host=args.host,
        port=args.port,
        config_file=args.config_file,
        log_level=args.log_level,
        log_format=args.log_format,
        workers=args.workers,
    )
    configure_logging(settings.log_level, settings.log_format)
    # log_config=None: uvicorn keeps the logging set up above (its records go through it too).
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,
        "access_log": False,
        # The client's address is the socket peer: uvicorn would otherwise take it from
        # X-Forwarded-For on any connection from 127.0.0.1, which every caller can write
        # (rate limits per address would be bypassed by rotating it).
        "proxy_headers": False,
    }
    if settings.tls_certfile is not None:
        options["ssl_certfile"] = str(settings.tls_certfile)
        options["ssl_keyfile"] = str(settings.tls_keyfile)
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # Each worker process builds its own application from the environment: hand the flags
    # down as the variables they stand for.
    for key, value in _FLAG_VARIABLES.items():
        given = getattr(args, key)
        if given is not None:
            os.environ[value] = str(given)
    uvicorn.run(
        "gateway.app:create_app_from_environment",
        factory=True,
        workers=settings.workers,
        **options,
    )
    return 0


_FLAG_VARIABLES = {
    "models": "GATEWAY_MODELS",
    "host": "GATEWAY_HOST",
    "port": "GATEWAY_PORT",
    "config_file": "GATEWAY_CONFIG_FILE",
    "log_level": "GATEWAY_LOG_LEVEL",
    "log_format": "GATEWAY_LOG_FORMAT",
}


def _export_schema(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(models=args.models)
    runtime = ModelRuntime(settings, scan_repository(settings.models))
    try:
        runtime.load_all(sessions=False)
        sdl = build_schema(list(runtime.entries.values())).as_sdl()
    finally:
        runtime.close()
    if args.output is not None:
        args.output.write_text(sdl, encoding="utf-8")
    else:
        out.write(sdl)
    return 0


def _check(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(models=args.path, warmup=True)
    scan = scan_repository(settings.models)
    runtime = ModelRuntime(settings, scan)
    try:
        runtime.load_all()
    finally:
        runtime.close()
    rows = [("MODEL", "VERSION", "INPUTS", "OUTPUTS", "LOAD MS", "STATE")]
    failed = False
    for entry in runtime.entries.values():
        for v, mv in sorted(entry.versions.items()):
            sig = mv.signature
            ins = (
                ", ".join(f"{i.name}:{i.datatype.value}{list(i.shape)}" for i in sig.inputs)
                if sig
                else "-"
            )
            outs = (
                ", ".join(f"{o.name}:{o.datatype.value}{list(o.shape)}" for o in sig.outputs)
                if sig
                else "-"
            )
            ms = f"{mv.load_seconds * 1000:.1f}" if mv.load_seconds is not None else "-"
            # close() marks READY versions UNAVAILABLE; what counts is whether the load worked.
            state = "FAILED: " + (mv.reason or "") if mv.state is ModelState.FAILED else "READY"
            failed |= mv.state is ModelState.FAILED
            rows.append((entry.name, str(v), ins, outs, ms, state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        out.write(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] + "\n"
        )
    for warning in scan.warnings:
        out.write(f"skipped: {warning}\n")
    return 1 if failed else 0
