"""Generated protobuf code; do not edit. Regenerate with `make proto`."""
