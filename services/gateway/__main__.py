import sys

from services.gateway import app

app.main(sys.argv[1:])
