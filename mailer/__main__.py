from mailer.cli import run

run()
