"""Settings and mail servers: every setting from the environment and .env (config; the bounce settings in
bounce_config), provider presets, OAuth2, one SMTP connection, the delivery pool, the IMAP connection bounces
are read from, and check --smtp / --imap (doctor)."""
