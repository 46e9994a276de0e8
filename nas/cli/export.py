"""``nas export``: write an architecture as an ONNX file."""

from __future__ import annotations

#: the one line ``nas --help`` shows for this command
HELP = "export an architecture to ONNX (freshly initialised weights)"


def register(subparsers) -> None:
    from nas.search_space import list_spaces

    parser = subparsers.add_parser("export", help=HELP)
    parser.add_argument("--space", choices=list_spaces(), help="search space (or from --result)")
    parser.add_argument("--arch", help="canonical architecture string (or from --result)")
    parser.add_argument("--result", metavar="RESULT.json",
                        help="result.json of 'nas search' (or its --out folder): space, architecture and "
                             "class count come from it")
    parser.add_argument("--classes", type=int, default=None, metavar="N",
                        help="outputs of the classifier (default: from --result or --dataset, else the space's: "
                             "10 for nb201 and 100 for fbnet)")
    parser.add_argument("--dataset", default=None,
                        help="task the network is for, which sets --classes (nb201: cifar10 10, cifar100 100, "
                             "imagenet16-120 120)")
    parser.add_argument("--out", required=True, help="path of the .onnx file to write")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--context-length", default="512",
                        help="slm only: prompt length (tokens) of the prefill graph (default 512)")
    parser.set_defaults(handler=_export)


def _export(args) -> int:
    from nas.export import export_arch
    from nas.outputs import check_output_file

    _resolve_arch(args)
    check_output_file(args.out)

    if args.space == "slm":
        return _export_slm(args)
    from nas.search_space import get_space

    path = export_arch(args.space, args.arch, args.out, seed=args.seed, num_classes=args.classes)
    classes = args.classes or get_space(args.space).num_classes
    print(f"wrote {path} (input 'input' [batch,3,32,32] float32, output 'logits' [batch,{classes}]; "
          f"weights freshly initialised)")
    return 0


def _resolve_arch(args) -> None:
    """Fill ``--space``, ``--arch`` and ``--classes`` from ``--result`` / ``--dataset``, refusing contradictions."""
    import json
    from pathlib import Path

    from nas.errors import UserInputError
    from nas.search_space import get_space

    if args.result:
        path = Path(args.result)
        path = path / "result.json" if path.is_dir() else path
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise UserInputError(f"--result {str(path)!r} is not a readable result.json of 'nas search' "
                                 f"({error})") from None
        if not isinstance(record, dict) or not record.get("arch") or not record.get("space"):
            raise UserInputError(f"--result {str(path)!r} names no architecture (the search found none, or it is "
                                 f"not a 'nas search' result); give --space and --arch")
        space = get_space(record["space"])
        for option, value in (("space", record["space"]), ("arch", record["arch"])):
            given = getattr(args, option)
            same = given is None or (given == value if option == "space"
                                     else space.from_string(given) == space.from_string(value))
            if not same:
                raise UserInputError(f"--{option} {given!r} differs from the {option} in {str(path)!r} "
                                     f"({value!r}); give one of them")
            setattr(args, option, value)
        if args.classes is None and args.dataset is None:
            args.classes = record.get("num_classes")
    if args.space is None or args.arch is None:
        raise UserInputError("nas export needs --space and --arch, or --result with the result.json of a 'nas search'")
    if args.dataset is not None:
        from nas.search import get_accuracy_estimator

        classes = get_accuracy_estimator(args.space, dataset=args.dataset).num_classes
        if args.classes is not None and classes is not None and args.classes != classes:
            raise UserInputError(f"--classes {args.classes} contradicts --dataset {args.dataset} ({classes} classes); "
                                 f"give one of them")
        args.classes = args.classes or classes
    if args.classes is not None and (isinstance(args.classes, bool) or not isinstance(args.classes, int)
                                     or args.classes < 1):
        raise UserInputError(f"--classes must be a whole number >= 1, got {args.classes!r}")


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
