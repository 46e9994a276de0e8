"""``nas agent serve``: run the remote device agent on this machine."""

from __future__ import annotations

#: the one line ``nas --help`` shows for this command
HELP = "serve this machine as a remote device (profiler kind 'remote')"


def register(subparsers) -> None:
    from nas.profilers.remote import DEFAULT_PORT, MAX_MODEL_BYTES, TOKEN_ENV

    parser = subparsers.add_parser("agent", help=HELP)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve", help="time uploaded ONNX models with ONNX Runtime over HTTP",
        description="Serve this machine as a device: clients upload ONNX models and ask for timed runs, one "
                    "measurement at a time. On any address but loopback a token is required: put it in a file "
                    f"readable by you alone (--token-file) or in ${TOKEN_ENV}; it is never given on the command "
                    "line.")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any free)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 to accept other machines, which "
                            "needs a token)")
    serve.add_argument("--token-file", metavar="FILE",
                       help=f"file holding the token clients must send (chmod 600); default ${TOKEN_ENV}")
    serve.add_argument("--max-upload-mb", type=float, default=MAX_MODEL_BYTES / 2**20, metavar="MB",
                       help=f"largest model accepted (default {MAX_MODEL_BYTES // 2**20} MB)")
    serve.set_defaults(handler=_serve)


def _serve(args) -> int:
    from nas.errors import UserInputError
    from nas.profilers.remote import serve, token_from

    if not 0 <= args.port <= 65535:
        raise UserInputError(f"--port must be between 0 and 65535, not {args.port}")
    if not args.max_upload_mb > 0:
        raise UserInputError(f"--max-upload-mb must be > 0, not {args.max_upload_mb}")
    token = token_from(args.token_file)
    try:
        serve(args.port, args.host, token=token, max_upload_bytes=int(args.max_upload_mb * 2**20))
    except OSError as error:
        raise UserInputError(f"cannot listen on {args.host}:{args.port}: {error.strerror}; pick another "
                             f"--port") from None
    return 0
