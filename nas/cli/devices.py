"""``nas devices list``, ``nas devices show NAME`` and ``nas devices add NAME``."""

from __future__ import annotations

import sys

#: the one line ``nas --help`` shows for this command
HELP = "the device catalog, and your own devices"


def register(subparsers) -> None:
    parser = subparsers.add_parser("devices", help=HELP,
                                   description="The shipped catalog plus your own device files (one YAML file "
                                               "each in $NAS_DEVICES, default ~/.config/nas/devices).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="a table of every catalog device")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="everything the catalog knows about one device, and what the "
                                           "measurement store holds for it")
    show.add_argument("name")
    show.add_argument("--store", metavar="PATH|URL",
                      help="measurement store: a SQLite file or postgresql+psycopg://USER@HOST:5432/DB (default "
                           "$NAS_STORE or ~/.cache/nas/measurements.db)")
    show.set_defaults(handler=_show)
    add = actions.add_parser(
        "add", help="describe your own device in a device file, checked",
        description="Write NAME.yaml in $NAS_DEVICES (default ~/.config/nas/devices) and check it: the profiler "
                    "kind and its settings, and whether the device answers now.")
    add.add_argument("name", help="device name: letters, digits and . _ -")
    add.add_argument("--profiler", required=True, metavar="KIND",
                     help="how the device is reached: remote (a machine running 'nas agent serve'), onnxruntime "
                          "(this machine), adb (an Android phone), replay (a recorded table column)")
    add.add_argument("--url", action="append", metavar="URL",
                     help="remote: the agent's URL, e.g. http://192.168.1.20:8765; repeat for several boards of "
                          "the same kind (work is spread over those that answer)")
    add.add_argument("--token-file", metavar="PATH",
                     help="remote: file holding the agents' token (readable by you alone)")
    add.add_argument("--serial", help="adb: the phone's serial ('adb devices'); default: the only phone")
    add.add_argument("--threads", type=int, help="ONNX Runtime threads (default 1)")
    add.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                     help="any other profiler setting, e.g. --set rounds=8 --set table_column=pixel2")
    add.add_argument("--description", default="", help="what the device is")
    add.add_argument("--category", default="", help="e.g. cpu, gpu, phone, board")
    add.add_argument("--space", dest="spaces", action="append", default=[], metavar="SPACE",
                     help="search spaces the device is for (default: any)")
    add.add_argument("--force", action="store_true", help="replace an existing file of that name")
    add.set_defaults(handler=_add)


def _list(_args) -> int:
    from nas.devices import catalog_problems, list_devices

    devices = list_devices()
    rows = [("name", "category", "profiler", "spaces", "description")]
    rows += [(d.name, d.category, d.profiler_kind, ",".join(d.spaces) or "any",
              d.description + (f" [{d.source}]" if d.source else "")) for d in devices]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
    return _report(catalog_problems())


def _report(problems) -> int:
    """Name each unreadable device file on stderr; exit 2 when there is one."""
    for problem in problems:
        print(f"nas devices: error: {problem} (the rest of the catalog is listed)", file=sys.stderr)
    return 2 if problems else 0


def _show(args) -> int:
    import yaml

    from nas.devices import get_device, unlisted_device
    from nas.errors import UserInputError

    try:
        device = get_device(args.name)
    except UserInputError as error:
        counts = _stored_counts(unlisted_device(args.name), args.store) if _plain_name(args.name) else []
        if not any(stored for _, stored, _ in counts):
            raise
        print(f"{args.name}: not in the catalog ({error.args[0].split('.')[0]}), but the measurement store "
              f"holds measurements for it")
        device = None
    if device is not None:
        record = {k: v for k, v in device.to_mapping().items()}
        if device.source:
            record["file"] = device.source
        print(yaml.safe_dump(record, sort_keys=False).rstrip())
    if device is not None and device.profiler_kind == "replay":
        print("measurements: replayed from the shipped latency tables (nothing is stored)")
        return 0
    print(_store_lines(device or unlisted_device(args.name), args.store))
    if device is not None:
        levels = _level_lines(device)
        if levels:
            print(levels)
    return 0


def _level_lines(device) -> str:
    """The device's reference levels this user has timed (``nas profile --help`` says what they are)."""
    from nas.errors import UserInputError
    from nas.profilers import InterleavedProfiler, make_profiler
    from nas.profilers.levels import default_levels_path
    from nas.search_space import list_spaces

    try:
        profiler = make_profiler(device)
    except UserInputError:
        return ""
    if not isinstance(profiler, InterleavedProfiler) or not profiler.protocol.drift_correction:
        return ""
    lines = []
    for space in list(device.spaces) or list_spaces():
        level = profiler.current_level(space)
        if level is not None:
            lines.append(f"  {space}: reference model {level.level_ms:.3f} ms (median of {level.blocks:,} blocks), "
                         f"slow moments +{100 * level.relative_spread:.0f} %")
    if not lines:
        return ""
    return "\n".join([f"reference level under the catalog settings ({default_levels_path()}):"] + lines)


def _plain_name(name: str) -> bool:
    from nas.devices import NAME_PATTERN

    return bool(NAME_PATTERN.fullmatch(name))


def _stored_counts(device, store) -> list[tuple[str, int, int]]:
    """``(space, measurements stored, reference architectures among them)`` for each space."""
    from nas.errors import UserInputError
    from nas.predictors import reference_archs
    from nas.search_space import get_space, list_spaces
    from nas.profilers.store import MeasurementStore

    spaces = list(device.spaces) or list_spaces()
    counts = []
    with MeasurementStore(store) as opened:
        for space in spaces:
            try:
                wanted = reference_archs(space)
            except (UserInputError, KeyError):  # a space the latency predictor does not cover has no references
                continue
            records = opened.all(device.name, space)
            archs = {r.arch for r in records}
            search_space = get_space(space)
            references = sum(search_space.to_string(a) in archs for a in wanted)
            counts.append((space, len(records), references))
    return counts


def _store_lines(device, store) -> str:
    from nas.profilers.store import default_store_location, shown_location

    lines = [f"measurements in the store ({shown_location(store or default_store_location())}):"]
    for space, stored, references in _stored_counts(device, store):
        state = "all 10 reference architectures there" if references >= 10 else (
            f"{references} of the 10 reference architectures there ('nas predictor reference-archs --space "
            f"{space}' lists them; measure them with 'nas profile --archs', or pass them to 'nas search "
            f"--measurements')")
        lines.append(f"  {space}: {stored} measurement{'s' if stored != 1 else ''}, {state}")
    return "\n".join(lines)


def _add(args) -> int:
    import yaml

    from nas.devices import Device, write_user_device
    from nas.errors import DeviceUnavailableError, UserInputError
    from nas.profilers import list_profiler_kinds, make_profiler

    kinds = list_profiler_kinds()
    if args.profiler not in kinds:
        raise UserInputError(f"--profiler {args.profiler!r} is not a profiler kind; allowed: {', '.join(kinds)}")
    settings: dict = {}
    for item in args.extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"--set {item!r}: write KEY=VALUE, e.g. --set rounds=8")
        try:
            settings[key.strip()] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            settings[key.strip()] = value
    urls = args.url or []
    if urls and args.profiler != "remote":
        raise UserInputError("--url applies to --profiler remote only")
    if len(urls) == 1:
        settings["url"] = urls[0]
    elif urls:
        settings["agents"] = list(urls)
    for key, value in (("token_file", args.token_file), ("serial", args.serial), ("threads", args.threads)):
        if value is not None:
            settings[key] = value
    device = Device(args.name, args.description, args.category, args.profiler, settings,
                    spaces=tuple(args.spaces))
    if args.spaces:
        from nas.search_space import get_space

        for space in args.spaces:
            get_space(space)
    profiler = make_profiler(device)  # checks the settings: a bad one names itself
    note = "answers now"
    try:
        profiler.check_available()
    except DeviceUnavailableError as error:
        note = f"does not answer now ({error}); it is measured once it does"
    path = write_user_device(device, overwrite=args.force)
    print(f"wrote {path}: device {device.name!r} (profiler {device.profiler_kind}) {note}")
    return 0
