from sinklens.cli import entry

entry()
