"""What a run prints: a start block, a progress bar or plain lines, the end table; each message
once and from rank 0 only, with everything kept in <run>/run.log."""
