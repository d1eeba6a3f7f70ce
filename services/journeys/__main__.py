"""`python -m services.journeys --port 50055 --data-dir ./data`."""

import sys

from services.journeys import app

app.main(sys.argv[1:])
