"""`python -m services.console --port 8080`."""

import sys

from services.console import app

app.main(sys.argv[1:])
