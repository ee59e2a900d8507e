from clients.cli import app

app()
