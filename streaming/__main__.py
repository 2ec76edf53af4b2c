from streaming.cli import app

app(prog_name="imgstream")
