"""``eprd mirror``: a verified offline copy of a registry's zip packages (issue 15)."""
