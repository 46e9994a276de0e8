"""``nas export``: write an architecture as an ONNX file."""

from __future__ import annotations

#: the one line ``nas --help`` shows for this command
HELP = "export an architecture to ONNX (freshly initialised weights)"


def register(subparsers) -> None:
    from nas.search_space import list_spaces

    parser = subparsers.add_parser("export", help=HELP)
    parser.add_argument("--space", required=True, choices=list_spaces())
    parser.add_argument("--arch", required=True, help="canonical architecture string")
    parser.add_argument("--out", required=True, help="path of the .onnx file to write")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--context-length", default="512",
                        help="slm only: prompt length (tokens) of the prefill graph (default 512)")
    parser.set_defaults(handler=_export)


def _export(args) -> int:
    from nas.export import export_arch
    from nas.outputs import check_output_file

    check_output_file(args.out)

    if args.space == "slm":
        return _export_slm(args)
    path = export_arch(args.space, args.arch, args.out, seed=args.seed)
    print(f"wrote {path} (input 'input' [batch,3,32,32] float32, output 'logits'; weights freshly initialised)")
    return 0


def _export_slm(args) -> int:
    from nas.errors import UserInputError
    from nas.export import export_slm

    try:
        prompt_length = int(args.context_length)
    except ValueError:
        raise UserInputError(f"--context-length must be a positive integer, not {args.context_length!r}") from None
    decode, prefill = export_slm(args.arch, args.out, seed=args.seed, prompt_length=prompt_length)
    print(f"wrote {decode} (decode step: inputs 'token' [batch] int64, 'position' [1] int64 and every layer's "
          f"state; outputs 'logits' [batch,256] and 'present_*' states)")
    print(f"wrote {prefill} (prefill: input 'tokens' [batch,{prompt_length}] int64; outputs the last logits and "
          f"every state; weights freshly initialised)")
    return 0
