"""What every group shares, importing nothing of the project: errors and exit codes, addresses, the one
URL policy (links), the HMAC tokens, logs, terminal-safe text, private files, the crash handler."""
