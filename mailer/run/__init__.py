"""One run: what the organiser asked (request), what is due (plan, pure), to whom (due_recipients), then
lock, send and record (dispatch, which also answers status, unsuppress, preview and send --to), and what
a person or cron sees of it (report)."""
