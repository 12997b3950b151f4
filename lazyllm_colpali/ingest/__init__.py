"""Sources -> content hashes -> rendered pages -> page records."""
