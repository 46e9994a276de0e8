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
    parser.set_defaults(handler=_export)


def _export(args) -> int:
    from nas.export import export_arch
    from nas.outputs import check_output_file

    check_output_file(args.out)

    path = export_arch(args.space, args.arch, args.out, seed=args.seed)
    print(f"wrote {path} (input 'input' [batch,3,32,32] float32, output 'logits'; weights freshly initialised)")
    return 0
