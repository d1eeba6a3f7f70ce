"""`python -m services.profile --port 50052 --data-dir ./data`."""

import sys

from services.profile import app

app.main(sys.argv[1:])
