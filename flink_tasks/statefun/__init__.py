"""statefun."""
