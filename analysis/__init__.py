"""Pure statistics on per-arm sufficient statistics: no I/O, no globals, imports nothing of ours."""
