"""Mail servers: settings from the environment and .env, provider presets, OAuth2, one SMTP connection, the
delivery pool, the IMAP connection bounces are read from, and check --smtp (doctor)."""
