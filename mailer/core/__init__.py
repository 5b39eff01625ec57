"""What every group shares, importing nothing of the project: errors and exit codes, addresses, the one
URL policy (links), the HMAC tokens, logs, terminal-safe text, output files written without following
links, the crash handler."""
