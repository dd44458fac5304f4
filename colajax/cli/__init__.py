"""The `colajax` subcommands: one module per command, each exposing `main(argv) -> int`."""
