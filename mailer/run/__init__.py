"""One run: what is due (plan, pure), then lock, send and record (dispatch), and the report."""
