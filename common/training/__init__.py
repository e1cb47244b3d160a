"""Local training of a scholar on one task, with replay passed in explicitly."""
