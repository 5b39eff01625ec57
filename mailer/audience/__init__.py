"""Who receives it: the list files, the web service (one-click unsubscribe, confirmed subscribe), bounces,
and the roster of who gets no mail and why."""
