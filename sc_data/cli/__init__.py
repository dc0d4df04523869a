"""The `sc-data` command line: a thin Typer front-end over :mod:`sc_data`."""
