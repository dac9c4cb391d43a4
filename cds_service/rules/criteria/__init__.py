"""One module per contract criterion id; each exposes `decide(ctx) -> Finding`."""
