"""``nas agent serve``: run the remote device agent on this machine."""

from __future__ import annotations

#: the one line ``nas --help`` shows for this command
HELP = "serve this machine as a remote device (profiler kind 'remote')"


def register(subparsers) -> None:
    from nas.profilers.remote import DEFAULT_PORT

    parser = subparsers.add_parser("agent", help=HELP)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="time uploaded ONNX models with ONNX Runtime over HTTP")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any free)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 to accept other machines)")
    serve.set_defaults(handler=_serve)


def _serve(args) -> int:
    from nas.errors import UserInputError
    from nas.profilers.remote import serve

    if not 0 <= args.port <= 65535:
        raise UserInputError(f"--port must be between 0 and 65535, not {args.port}")
    try:
        serve(args.port, args.host)
    except OSError as error:
        raise UserInputError(f"cannot listen on {args.host}:{args.port}: {error.strerror}; pick another "
                             f"--port") from None
    return 0
