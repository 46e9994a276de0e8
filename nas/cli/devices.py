"""``nas devices list`` and ``nas devices show NAME``."""

from __future__ import annotations

import yaml

from nas.devices import get_device, list_devices

#: the one line ``nas --help`` shows for this command
HELP = "the device catalog"


def register(subparsers) -> None:
    parser = subparsers.add_parser("devices", help=HELP)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="a table of every catalog device")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="everything the catalog knows about one device")
    show.add_argument("name")
    show.set_defaults(handler=_show)


def _list(_args) -> int:
    devices = list_devices()
    rows = [("name", "category", "profiler", "spaces", "description")]
    rows += [(d.name, d.category, d.profiler_kind, ",".join(d.spaces) or "any", d.description) for d in devices]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
    return 0


def _show(args) -> int:
    device = get_device(args.name)
    print(yaml.safe_dump({
        "name": device.name, "description": device.description, "category": device.category,
        "profiler": {"kind": device.profiler_kind, "settings": device.settings},
        "hardware": device.hardware, "spaces": list(device.spaces), "provenance": device.provenance,
    }, sort_keys=False).rstrip())
    return 0
