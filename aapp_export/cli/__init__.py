"""Command-line entry points of the aapp-export distribution."""
