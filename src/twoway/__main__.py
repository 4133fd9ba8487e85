from twoway.cli import app

app()
