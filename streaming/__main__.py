from streaming.cli.main import app

app(prog_name="imgstream")
