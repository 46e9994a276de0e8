"""Write the descriptions of the subcommand parsers shipped in ``nas/cli/parsers/`` (run after
changing the package's sources: ``python -m nas.cli.write_parsers``)."""

from nas.cli.parser_cache import write_shipped

if __name__ == "__main__":
    for written in write_shipped():
        print(f"wrote {written}")
